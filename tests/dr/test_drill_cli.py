"""The restore drill and the CLI, run as an operator would (python -m dr ...)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dr import drill, s3io
from dr.config import load_config

pytestmark = [pytest.mark.tools]
REPO = Path(__file__).resolve().parents[2]


def dr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dr", *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.control("SC-BCK-02")
def test_etcd_drill_passes_and_publishes_rto_rpo(cfg, tmp_path):
    p = dr("--config", str(tmp_path / "dr.yaml"), "drill", "--dataset", "etcd")
    assert p.returncode == 0, p.stderr + p.stdout
    line = p.stdout.strip().splitlines()[-1]
    assert line.startswith("drill dc-astana/drill-etcd: PASS RTO=") and "RPO=" in line
    print(line)
    for site in cfg.sites:
        doc = json.loads(s3io.get_bytes(s3io.client(site), site.bucket, "drills/dc-astana/latest.json"))
        assert doc["ok"] is True and doc["error"] is None
        assert 0 < doc["rto_seconds"] < 600 and 0 < doc["rpo_seconds"] < 3600
        assert doc["started"].endswith("Z") and doc["finished"] > doc["started"]
        assert doc["replicated_to"] == ["dc-astana", "dc-almaty"]


@pytest.mark.control("SC-BCK-02")
def test_dir_drill_deletes_and_restores(cfg, tmp_path):
    src = tmp_path / "drill-vol"
    src.mkdir()
    (src / "x").write_bytes(b"x" * 1000)
    p = dr("--config", str(tmp_path / "dr.yaml"), "drill", "--dataset", "drill-vol", "--source", str(src))
    assert p.returncode == 2 and "--destroy-source" in p.stderr  # deleting needs explicit consent
    p = dr(
        "--config",
        str(tmp_path / "dr.yaml"),
        "drill",
        "--dataset",
        "drill-vol",
        "--source",
        str(src),
        "--destroy-source",
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "PASS" in p.stdout.splitlines()[-1]
    assert (src / "x").read_bytes() == b"x" * 1000


@pytest.mark.control("SC-BCK-02")
def test_drill_fails_when_rto_target_missed(make_cfg):
    cfg = make_cfg(rto_seconds=1)

    class Rep:
        good, verified_sites = True, ["dc-astana"]

    res = drill._run(
        cfg, "dc-astana", "slow", lambda: None, Rep, lambda: None, lambda _tmp: time.sleep(1.3) or "dc-astana"
    )
    assert res.ok is False and res.rto_seconds >= 1.3 and "targets missed: rto" in res.error


def test_cli_backup_restore_etcd(cfg, etcd, tmp_path):
    conf = str(tmp_path / "dr.yaml")
    etcd.put("/cli/k", "cli-value")
    p = dr("--config", conf, "backup", "etcd", "--endpoint", etcd.endpoint, "--dataset", "etcd-cli")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["good"] and rep["replicated"]
    p = dr("--config", conf, "verify", "--dataset", "etcd-cli")
    assert p.returncode == 0 and all(v.startswith("verified") for v in json.loads(p.stdout).values()), p.stdout
    p = dr(
        "--config",
        conf,
        "restore",
        "--dataset",
        "etcd-cli",
        "--site",
        "dc-almaty",
        "--etcd-data-dir",
        str(tmp_path / "new-member"),
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["restored_from"] == "dc-almaty" and out["sentinel"]
    assert (tmp_path / "new-member" / "member").is_dir()


def _with_countries(conf: Path, countries: list[str], allowed: list[str], out: Path) -> Path:
    """`conf` with each site's country and the stack's allowed countries, as infra/site_backups.py writes them."""
    data = yaml.safe_load(conf.read_text())
    for site, country in zip(data["sites"], countries, strict=True):
        site["country"] = country
    data["allowed_countries"] = allowed
    out.write_text(yaml.safe_dump(data))
    return out


def test_cli_errors_are_clear(cfg, tmp_path):
    conf = str(tmp_path / "dr.yaml")
    p = dr("--config", conf, "restore", "--dataset", "never-backed-up", "--target", str(tmp_path / "t"))
    assert p.returncode == 2 and "no backup of dc-astana/never-backed-up" in p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text((tmp_path / "dr.yaml").read_text().replace("primary: dc-astana", "primary: dc-nowhere"))
    p = dr("--config", str(bad), "sync")
    assert p.returncode == 2 and f"error: invalid DR config {bad}:\n" in p.stderr
    assert "\n  primary: 'dc-nowhere' is not one of sites[].name" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.control("SC-DATA-01")
def test_a_backup_site_outside_the_allowed_countries_is_refused(tmp_path, make_cfg):
    make_cfg()  # writes tmp_path/dr.yaml
    conf = tmp_path / "dr.yaml"
    # The control: both sites in the stack's allowed countries load.
    ok = load_config(_with_countries(conf, ["KZ", "KZ"], ["KZ"], tmp_path / "ok.yaml"))
    assert [s.country for s in ok.sites] == ["KZ", "KZ"] and ok.allowed_countries == ["KZ"]
    bad = _with_countries(conf, ["KZ", "DE"], ["KZ"], tmp_path / "bad.yaml")
    p = dr("--config", str(bad), "sync")
    assert p.returncode == 2 and f"error: invalid DR config {bad}:\n" in p.stderr, p.stderr
    assert "\n  sites[1].country: 'DE' is outside the allowed countries ['KZ']" in p.stderr
    assert "sites[0].country" not in p.stderr and "Traceback" not in p.stderr
    # The allowed countries are the stack's data, not the code's: the same site passes where the stack allows it.
    assert load_config(_with_countries(conf, ["KZ", "DE"], ["KZ", "DE"], tmp_path / "eu.yaml")).sites[1].country == "DE"
