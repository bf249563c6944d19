"""Prometheus/Alertmanager config and rules: promtool/amtool checks, unit tests, coverage of every alert."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring import rulegen
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "monitoring" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*_test.yml"))


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def alerts_in(files) -> list[dict]:
    return [r for f in files for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_committed_files_are_the_generator_output():
    for rel, text in rulegen.render_all().items():
        assert (PROM / rel).read_text() == text, f"{rel} drifted: run `python -m monitoring.rulegen --write`"
    assert {p.name for p in RULE_FILES} == {Path(r).name for r in rulegen.render_all() if r.startswith("rules/")}


@pytest.mark.tools
def test_promtool_check_config_and_rules():
    promtool = require_tool("promtool")
    r = run([promtool, "check", "config", str(PROM / "prometheus.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(RULE_FILES)


@pytest.mark.tools
@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_rule_unit_tests(test_file):
    r = run([require_tool("promtool"), "test", "rules", str(test_file)])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.tools
def test_promtool_catches_a_broken_expectation(tmp_path):
    # The unit tests can fail: flip one expectation and promtool must report it.
    src = (PROM / "tests" / "certs_test.yml").read_text().replace("../rules/", str(PROM / "rules") + "/")
    broken = src.replace("exp_labels: {severity: critical, controls: SC-CRY-01,",
                         "exp_labels: {severity: warning, controls: SC-CRY-01,")
    assert broken != src
    (tmp_path / "t.yml").write_text(broken)
    r = run([require_tool("promtool"), "test", "rules", str(tmp_path / "t.yml")])
    assert r.returncode != 0 and "FAILED" in r.stdout + r.stderr


def test_every_alert_has_a_firing_and_a_not_firing_case():
    firing: set[str] = set()
    quiet: set[str] = set()
    for f in TEST_FILES:
        for t in yaml.safe_load(f.read_text())["tests"]:
            for case in t.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in alerts_in(RULE_FILES)}
    assert names, "no alerts found"
    assert not names - firing, f"alerts without a firing test case: {sorted(names - firing)}"
    assert not names - quiet, f"alerts without a not-firing test case: {sorted(names - quiet)}"
    required = {"SLOErrorBudgetBurnFast", "SLOErrorBudgetBurnSlow", "BackupTooOld", "RestoreDrillFailed",
                "RestoreDrillTooOld", "CertificateExpiringSoon", "TransportTunnelDown", "SiteDown",
                "EtcdMemberLoss"}
    assert required <= names


def control_ids() -> set[str]:
    return {c["id"] for c in yaml.safe_load((ROOT / "policies" / "controls.yaml").read_text())["controls"]}


def test_every_alert_is_labelled_and_annotated():
    known = control_ids()
    for a in alerts_in(RULE_FILES):
        assert a["labels"]["severity"] in ("critical", "warning"), a["alert"]
        ids = a["labels"]["controls"].split(",")
        assert ids and set(ids) <= known, f"{a['alert']}: unknown control ids {set(ids) - known}"
        assert set(a["annotations"]) == {"summary", "description", "runbook"}, a["alert"]


def test_burn_rate_thresholds_follow_the_sre_workbook():
    alerts = {a["alert"]: a["expr"] for a in alerts_in(RULE_FILES)}
    budget = 1 - 0.99982
    fast = re.findall(r"rate(\w+) > ([\d.]+)", alerts["SLOErrorBudgetBurnFast"])
    slow = re.findall(r"rate(\w+) > ([\d.]+)", alerts["SLOErrorBudgetBurnSlow"])
    assert [w for w, _ in fast] == ["1h", "5m"] and [w for w, _ in slow] == ["6h", "30m"]
    assert all(abs(float(v) - 14.4 * budget) < 1e-9 for _, v in fast)
    assert all(abs(float(v) - 6 * budget) < 1e-9 for _, v in slow)


@pytest.mark.tools
def test_scaled_instance_is_valid_and_shrinks_only_windows(tmp_path):
    rulegen.write(tmp_path, scale=360)
    r = run([require_tool("promtool"), "check", "rules", *map(str, sorted((tmp_path / "rules").glob("*.yml")))])
    assert r.returncode == 0, r.stdout + r.stderr
    slo = (tmp_path / "rules" / "slo.yml").read_text()
    assert "[10s]" in slo and "[1m]" in slo and "[1h]" not in slo   # 1h/360, 6h/360
    assert "sovcloud:probe_error_ratio:rate1h > 0.002592" in slo     # same names, same thresholds


def test_prometheus_config_generator_for_a_site_list(tmp_path):
    cfg = rulegen.prometheus_config([{"name": "dc-a", "exporters": {"prober": "127.0.0.1:9470"},
                                      "etcd": ["127.0.0.1:2381"]}], scrape_interval="1s")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["sovcloud-prober"]["static_configs"] == [{"targets": ["127.0.0.1:9470"], "labels": {"site": "dc-a"}}]
    assert "etcd" in jobs
    with pytest.raises(ValueError, match="unknown exporter 'probe'"):
        rulegen.prometheus_config([{"name": "dc-a", "exporters": {"probe": "x:1"}}])


@pytest.mark.tools
def test_alertmanager_config():
    amtool = require_tool("amtool")
    am = PROM / "alertmanager.yml"
    r = run([amtool, "check-config", str(am)])
    assert r.returncode == 0, r.stdout + r.stderr
    # Routing: critical -> pager (and the cyber centre), warning -> tickets.
    for labels, receivers in ((["severity=critical", "site=dc-a"], {"pager", "cyber-centre"}),
                              (["severity=warning", "site=dc-a"], {"tickets"})):
        r = run([amtool, "config", "routes", "test", "--config.file", str(am), *labels])
        assert r.returncode == 0, r.stderr
        assert set(r.stdout.strip().split(",")) == receivers


@pytest.mark.tools
def test_dashboard_queries_are_valid_promql(tmp_path):
    dash = json.loads((ROOT / "monitoring" / "dashboards" / "sovcloud.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e}
                                                        for i, e in enumerate(exprs)]}]}
    (tmp_path / "d.yml").write_text(yaml.safe_dump(rules))
    r = run([require_tool("promtool"), "check", "rules", str(tmp_path / "d.yml")])
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_runbook_link_has_a_section():
    sections = set(re.findall(r"^## (\S+)$", (ROOT / "monitoring" / "RUNBOOK.md").read_text(), re.M))
    for a in alerts_in(RULE_FILES):
        path, _, anchor = a["annotations"]["runbook"].partition("#")
        assert path == "monitoring/RUNBOOK.md" and anchor == a["alert"].lower() and anchor in sections, a["alert"]


@pytest.mark.parametrize("seconds", [1, 6, 59, 60, 90, 120, 3600, 5400, 86400, 172800])
def test_a_duration_reads_back_as_the_seconds_it_was_written_from(seconds):
    assert rulegen.duration_seconds(rulegen.dur(seconds)) == seconds
