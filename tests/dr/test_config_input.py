"""Every bad input of `python -m dr` is refused before anything reads or writes a bucket: the DR config (a file
that is missing or not YAML, keys and credentials it cannot read, duplicate sites, the part size) and the
command line (--timestamp, --site), each problem named at its field with the fix, all at once, exit 2."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dr import layout
from dr.__main__ import argument_problems, main
from dr.config import PART_SIZE_MIB, ConfigError, load_config


def _write(d: Path, data: dict) -> Path:
    """The config `data` in `d`, with every file it names present and valid."""
    for s in data["sites"]:
        (d / s["credentials_file"]).write_text(json.dumps({"access_key": "a", "secret_key": "s"}))
    (d / "verify.pem").write_text("a public key\n")
    (d / "dr.yaml").write_text(yaml.safe_dump(data))
    return d / "dr.yaml"


@st.composite
def valid_configs(draw) -> dict:
    n = draw(st.integers(1, 3))
    names = draw(st.lists(st.from_regex(r"^dc-[a-z]{2,8}$", fullmatch=True), min_size=n, max_size=n, unique=True))
    return {
        "sites": [{"name": name, "endpoint": f"http://127.0.0.1:{9000 + i}", "credentials_file": f"{name}.json"}
                  for i, name in enumerate(names)],
        "primary": draw(st.sampled_from(names)),
        "verify_key_file": "verify.pem",
        "staging_dir": "staging",
        "part_size_mib": draw(st.integers(*PART_SIZE_MIB)),
    }


def _other(data: dict) -> int:
    """A site other than the first, added (a copy under a new name) when there is only one."""
    if len(data["sites"]) == 1:
        data["sites"].append({**data["sites"][0], "name": "dc-zz", "endpoint": "http://127.0.0.1:9099",
                              "credentials_file": "dc-zz.json"})
    return len(data["sites"]) - 1


# Each mistake changes the config (and its files, after they are written) and returns the field it breaks.
Mistake = Callable[[dict, Path, st.DataObject], str]


def _missing_credentials(data, d, draw) -> str:
    i = draw.draw(st.integers(0, len(data["sites"]) - 1))
    (d / data["sites"][i]["credentials_file"]).unlink()
    return f"sites[{i}].credentials_file"


def _credentials_not_keys(data, d, draw) -> str:
    i = draw.draw(st.integers(0, len(data["sites"]) - 1))
    (d / data["sites"][i]["credentials_file"]).write_text(draw.draw(st.sampled_from(
        ["", "{", "[]", '{"access_key": "a"}', '{"access_key": 1, "secret_key": "s"}'])))
    return f"sites[{i}].credentials_file"


def _missing_admin_credentials(data, d, draw) -> str:
    data["sites"][0]["admin_credentials_file"] = "nowhere/admin.json"
    return "sites[0].admin_credentials_file"


def _duplicate_name(data, d, draw) -> str:
    i = _other(data)
    data["sites"][i]["name"] = data["sites"][0]["name"]
    return f"sites[{i}].name"


def _duplicate_store(data, d, draw) -> str:
    i = _other(data)
    data["sites"][i]["endpoint"] = data["sites"][0]["endpoint"] + draw.draw(st.sampled_from(["", "/"]))
    return f"sites[{i}].endpoint"


def _part_size(data, d, draw) -> str:
    low, high = PART_SIZE_MIB
    data["part_size_mib"] = draw.draw(st.integers(-10, low - 1) | st.integers(high + 1, 100_000))
    return "part_size_mib"


def _missing_key(data, d, draw) -> str:
    field = draw.draw(st.sampled_from(["verify_key_file", "kek_file", "signing_key_file"]))
    data[field] = "keys/missing.pem"
    return field


def _unknown_primary(data, d, draw) -> str:
    data["primary"] = "dc-nowhere"
    return "primary"


def _governance(data, d, draw) -> str:
    data["sites"][-1]["object_lock_mode"] = "GOVERNANCE"
    return f"sites[{len(data['sites']) - 1}].object_lock_mode"


# Applied to the data before the files are written (config mistakes) or after (file mistakes).
BEFORE: dict[str, Mistake] = {"duplicate-name": _duplicate_name, "duplicate-store": _duplicate_store,
                              "part-size": _part_size, "missing-key": _missing_key,
                              "missing-admin-credentials": _missing_admin_credentials,
                              "unknown-primary": _unknown_primary, "governance": _governance}
AFTER: dict[str, Mistake] = {"missing-credentials": _missing_credentials,
                             "credentials-not-keys": _credentials_not_keys}


@settings(max_examples=40, deadline=None)
@given(valid_configs())
def test_valid_configs_load_and_change_nothing(data):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cfg = load_config(_write(d, data))
        assert [s.name for s in cfg.sites] == [s["name"] for s in data["sites"]]
        assert not (d / "staging").exists()  # loading a config creates nothing


@settings(max_examples=80, deadline=None)
@given(valid_configs(), st.sampled_from(sorted(BEFORE) + sorted(AFTER)), st.data())
def test_one_mistake_is_named_at_its_field(data, mistake, draw):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        field = BEFORE[mistake](data, d, draw) if mistake in BEFORE else None
        path = _write(d, data)
        if mistake in AFTER:
            field = AFTER[mistake](data, d, draw)
        with pytest.raises(ConfigError) as exc:
            load_config(path)
        fields = [f for f, _ in exc.value.problems]
        assert field in fields, exc.value.problems
        message = dict(exc.value.problems)[field]
        assert message and not message.startswith("Value error"), message
        assert exc.value.what == f"DR config {path}"
        assert not (d / "staging").exists()


def test_every_problem_at_once(tmp_path):
    data = {"sites": [{"name": "dc-a", "endpoint": "http://127.0.0.1:1", "credentials_file": "a.json"},
                      {"name": "dc-a", "endpoint": "http://127.0.0.1:1", "credentials_file": "b.json"}],
            "primary": "dc-a", "verify_key_file": "verify.pem", "staging_dir": "staging", "part_size_mib": 4,
            "retention": {"daily": -1}}
    path = _write(tmp_path, data)
    # Each field's own problems and the checks across the fields that parse (the two sites), in one report; the
    # lock check, which reads the retention that did not parse, joins once it does.
    assert {f for f, _ in _problems(path)} == {"part_size_mib", "retention.daily", "sites[1].name",
                                               "sites[1].endpoint"}
    data.update(part_size_mib=8, retention={"daily": 1}, sites=[{**s, "object_lock_retain_days": 1}
                                                                for s in data["sites"]])
    path.write_text(yaml.safe_dump(data))
    assert {f for f, _ in _problems(path)} == {"sites[1].name", "sites[1].endpoint", "sites[0].object_lock_retain_days",
                                               "sites[1].object_lock_retain_days"}
    data["sites"] = [{k: v for k, v in s.items() if k != "object_lock_retain_days"} for s in data["sites"]]
    (tmp_path / "b.json").unlink()
    (tmp_path / "verify.pem").unlink()
    data["sites"][1].update(name="dc-b", endpoint="http://127.0.0.1:2")
    path.write_text(yaml.safe_dump(data))
    problems = dict(_problems(path))
    assert set(problems) == {"sites[1].credentials_file", "verify_key_file"}, problems
    assert "cannot be read (No such file or directory); point it at the site's JSON credentials file" in (
        problems["sites[1].credentials_file"])
    assert "does not exist; point it at the key `python -m dr keygen` wrote" in problems["verify_key_file"]


def _problems(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.problems


# --- the command line ----------------------------------------------------------------------------------------

GOOD = {"sites": [{"name": "dc-a", "endpoint": "http://127.0.0.1:1", "credentials_file": "a.json"},
                  {"name": "dc-b", "endpoint": "http://127.0.0.1:2", "credentials_file": "b.json"}],
        "primary": "dc-a", "verify_key_file": "verify.pem", "staging_dir": "staging"}


def _args(**over) -> argparse.Namespace:
    return argparse.Namespace(**{"cmd": "verify", "timestamp": None, "site": None, **over})


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=30).filter(lambda t: layout.parse_stamp(t) is None),
       st.text(min_size=1, max_size=20).filter(lambda t: t not in ("dc-a", "dc-b")))
def test_a_bad_timestamp_or_site_is_named_at_its_option(ts, site):
    cfg = _cfg()
    assert argument_problems(_args(timestamp="20260102T030405Z", site=["dc-b"]), cfg) == []  # the control
    assert [f for f, _ in argument_problems(_args(timestamp=ts), cfg)] == ["--timestamp"]
    assert [f for f, _ in argument_problems(_args(site=["dc-a", site]), cfg)] == ["--site"]
    assert [f for f, _ in argument_problems(_args(cmd="backup", kind="k8s", site=site), cfg)] == ["--site"]
    both = argument_problems(_args(timestamp=ts, site=[site]), cfg)
    assert [f for f, _ in both] == ["--timestamp", "--site"]


_CFG = None


def _cfg():
    global _CFG
    if _CFG is None:
        d = Path(tempfile.mkdtemp())
        _CFG = load_config(_write(d, GOOD))
    return _CFG


def test_the_cli_exits_2_with_one_line_per_problem_before_touching_a_bucket(tmp_path, capsys):
    conf = _write(tmp_path, GOOD)
    argv = ["--config", str(conf), "restore", "--dataset", "etcd", "--timestamp", "yesterday", "--site", "dc-x",
            "--target", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: invalid python -m dr arguments:",
        "  --timestamp: 'yesterday' is not a backup stamp YYYYmmddTHHMMSSZ (e.g. 20260102T030405Z, as `verify` "
        "prints it); leave it out for the newest backup",
        "  --site: 'dc-x' is not a site of the DR config: use one of ['dc-a', 'dc-b']",
        f"  --target: {tmp_path} is not empty: name a fresh directory"]
    assert not (tmp_path / "staging").exists()
    # A bad config and a bad command line: both reported.
    (tmp_path / "b.json").unlink()
    assert main(argv[:3] + ["--dataset", "etcd", "--timestamp", "yesterday"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: invalid DR config {conf}:" and err[1].startswith("  sites[1].credentials_file: ")
    assert err[2] == "error: invalid python -m dr arguments:" and err[3].startswith("  --timestamp: ")
    assert len(err) == 4


@pytest.mark.parametrize(("argv", "first", "field"), [
    (["--config", "{d}/missing.yaml", "sync"], "error: invalid DR config:", "  {d}/missing.yaml: cannot read"),
    (["--config", "{d}/bad.yaml", "sync"], "error: invalid DR config:", "  {d}/bad.yaml: not valid YAML"),
    (["failover", "--from", "dc-a", "--to", "dc-b", "--state", "{d}/missing.yaml"],
     "error: invalid site state:", "  {d}/missing.yaml: cannot read the site state"),
])
def test_a_missing_or_malformed_file_is_one_line_not_a_traceback(tmp_path, argv, first, field):
    (tmp_path / "bad.yaml").write_text("sites: [\n")
    p = subprocess.run([sys.executable, "-m", "dr", *[a.format(d=tmp_path) for a in argv]], capture_output=True,
                       text=True, timeout=120)
    lines = p.stderr.splitlines()
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert lines[0] == first.format(d=tmp_path) and lines[1].startswith(field.format(d=tmp_path)), p.stderr
    assert len(lines) == 2
