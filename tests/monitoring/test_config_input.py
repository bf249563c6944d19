"""Every bad input of `python -m monitoring.exporters` is refused before a port is bound or a store is asked: the
config (duplicate targets, stores and peers; a timeout not below its interval; a file it names missing; an S3
key missing from the environment; malformed YAML) and the command line (--listen, the TLS files), each problem
named at its field, all at once, exit 2 and one line per problem."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.exporters import config
from monitoring.exporters.__main__ import argument_problems, main

ENV = {"MON_ACCESS": "a", "MON_SECRET": "s"}
SITE = st.from_regex(r"^dc-[a-z]{2,8}$", fullmatch=True)


def _store(site: str, port: int) -> dict:
    return {"site": site, "endpoint_url": f"http://127.0.0.1:{port}", "access_key_env": "MON_ACCESS",
            "secret_key_env": "MON_SECRET"}


@st.composite
def valid_configs(draw) -> tuple[str, dict]:
    kind = draw(st.sampled_from(sorted(config.MODELS)))
    sites = draw(st.lists(SITE, min_size=2, max_size=4, unique=True))
    interval = draw(st.integers(10, 120))
    timing = {"interval_seconds": interval, "timeout_seconds": draw(st.integers(1, min(interval - 1, 60)))}
    if kind == "prober":
        data = {"source_site": sites[0], **timing,
                "targets": [{"site": s, "service": draw(st.sampled_from(["api", "gateway", "s3"])),
                             "url": f"https://{s}.gov.kz/healthz"} for s in sites[1:]]}
    elif kind in ("backup", "drills"):
        data = {**timing, "stores": [_store(s, 9000 + i) for i, s in enumerate(sites)]}
        if kind == "backup":
            data["expected"] = [{"site": s, "dataset": "etcd"} for s in sites]
        else:
            data["sites"] = sites
    elif kind == "certs":
        data = {**timing, "endpoints": [{"host": f"{s}.gov.kz", "port": 443} for s in sites]}
    else:
        data = {**timing, "peers": [{"public_key": f"key-{s}", "site": s} for s in sites]}
    return kind, data


def _list(data: dict) -> str:
    return next(k for k in ("targets", "stores", "endpoints", "peers") if k in data)


def _duplicate(kind: str, data: dict, draw) -> str:
    name = _list(data)
    data[name].append(dict(data[name][draw(st.integers(0, len(data[name]) - 1))]))
    i = len(data[name]) - 1
    return {"targets": f"targets[{i}]", "stores": f"stores[{i}].site", "endpoints": f"endpoints[{i}]",
            "peers": f"peers[{i}].public_key"}[name]


def _slow(kind: str, data: dict, draw) -> str:
    data["interval_seconds"] = draw(st.integers(1, 60))
    data["timeout_seconds"] = draw(st.integers(data["interval_seconds"], 60))  # 60: every kind's largest timeout
    return "timeout_seconds"


def _slow_target(kind: str, data: dict, draw) -> str:
    data["interval_seconds"] = 10
    data["targets"][-1]["timeout_seconds"] = draw(st.integers(10, 60))
    return f"targets[{len(data['targets']) - 1}].timeout_seconds"


def _missing_file(kind: str, data: dict, draw) -> str:
    field = {"prober": "ca_file", "backup": "verify_key_file"}[kind]
    data[field] = "/nonexistent/file.pem"
    return field


def _no_env(kind: str, data: dict, draw) -> str:
    i = draw(st.integers(0, len(data["stores"]) - 1))
    field = draw(st.sampled_from(["access_key_env", "secret_key_env"]))
    data["stores"][i][field] = "MON_NOT_SET"
    return f"stores[{i}].{field}"


# Each mistake and the kinds of config it applies to.
MISTAKES = {"duplicate": (_duplicate, set(config.MODELS)), "timeout": (_slow, set(config.MODELS)),
            "target-timeout": (_slow_target, {"prober"}), "missing-file": (_missing_file, {"prober", "backup"}),
            "no-credentials": (_no_env, {"backup", "drills"})}


def _load(kind: str, data: dict) -> config._Strict:
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, ENV):
        path = Path(tmp) / f"{kind}.yaml"
        path.write_text(yaml.safe_dump(data))
        return config.load(kind, path)


@settings(max_examples=60, deadline=None)
@given(valid_configs())
def test_valid_configs_load(case):
    kind, data = case
    assert isinstance(_load(kind, data), config.MODELS[kind])


@settings(max_examples=100, deadline=None)
@given(valid_configs(), st.data())
def test_one_mistake_is_named_at_its_field(case, data):
    kind, cfg = case
    mistake = data.draw(st.sampled_from(sorted(m for m, (_, kinds) in MISTAKES.items() if kind in kinds)))
    field = MISTAKES[mistake][0](kind, cfg, data.draw)
    with pytest.raises(config.ConfigError) as exc:
        _load(kind, cfg)
    assert field in [f for f, _ in exc.value.problems], (mistake, exc.value.problems)
    assert all(m and not m.startswith("Value error") for _, m in exc.value.problems)


def test_an_s3_key_missing_from_the_environment_names_its_variable(tmp_path):
    data = {"stores": [_store("dc-a", 1), {**_store("dc-b", 2), "secret_key_env": "MON_UNSET"}]}
    path = tmp_path / "backup.yaml"
    path.write_text(yaml.safe_dump(data))
    with mock.patch.dict(os.environ, ENV), pytest.raises(config.ConfigError) as exc:
        config.load("backup", path)
    assert exc.value.problems == [("stores[1].secret_key_env", "$MON_UNSET is not set in the exporter's environment: "
                                   "export the S3 monitor identity's secret key in it (the environment file the "
                                   "monitoring role writes), or name the variable that holds it")]
    data["stores"][1]["secret_key_env"] = "MON_SECRET"  # the control
    path.write_text(yaml.safe_dump(data))
    with mock.patch.dict(os.environ, ENV):
        assert config.load("backup", path).stores[1].credentials() == ("a", "s")


@pytest.mark.parametrize("listen", ["9470", ":9470", "localhost", "127.0.0.1:http", "127.0.0.1:70000", "h:-1"])
def test_a_bad_listen_address_is_named(listen):
    args = mock.Mock(listen=listen, tls_cert_file=None, tls_key_file=None, tls_client_ca_file=None)
    assert [f for f, _ in argument_problems(args)] == ["--listen"]
    args.listen = "127.0.0.1:9470"  # the control
    assert argument_problems(args) == []


def test_tls_options_are_checked_together(tmp_path):
    args = mock.Mock(listen="127.0.0.1:0", tls_cert_file=str(tmp_path / "c.pem"), tls_key_file=None,
                     tls_client_ca_file=str(tmp_path / "ca.pem"))
    assert [f for f, _ in argument_problems(args)] == ["--tls-cert-file", "--tls-cert-file", "--tls-client-ca-file"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_cli_reports_the_command_line_and_the_config_at_once_and_binds_nothing(tmp_path, capsys):
    bad = tmp_path / "prober.yaml"
    bad.write_text(yaml.safe_dump({"source_site": "dc-a", "interval_seconds": 5, "timeout_seconds": 5,
                                   "targets": [{"site": "dc-b", "service": "api", "url": "https://b.gov.kz/"}] * 2}))
    port = _free_port()
    assert main(["prober", "--config", str(bad), "--listen", f"127.0.0.1:{port}x"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: invalid python -m monitoring.exporters arguments:",
        f"  --listen: '127.0.0.1:{port}x' is not HOST:PORT with a port 0..65535; use e.g. 127.0.0.1:9470 "
        "([::1]:9470 for IPv6)",
        f"error: invalid prober exporter config {bad}:",
        "  timeout_seconds: 5 s must be below interval_seconds (5 s) so rounds never overlap; lower it or raise "
        "interval_seconds",
        "  targets[1]: duplicate target dc-b/api https://b.gov.kz/: it is also targets[0]; list each once"]
    # A good config with a bad --listen: still refused before anything is bound.
    bad.write_text(yaml.safe_dump({"source_site": "dc-a",
                                   "targets": [{"site": "dc-b", "service": "api", "url": "https://b.gov.kz/"}]}))
    assert main(["prober", "--config", str(bad), "--listen", "127.0.0.1"]) == 2
    assert capsys.readouterr().err.splitlines()[1].startswith("  --listen: '127.0.0.1' is not HOST:PORT")


def test_malformed_yaml_is_one_line_not_a_traceback(tmp_path):
    bad = tmp_path / "backup.yaml"
    bad.write_text("stores: [\n")
    r = subprocess.run([sys.executable, "-m", "monitoring.exporters", "backup", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == ["error: invalid backup exporter config:",
                                     f"  {bad}: not valid YAML at line 2, column 1: expected the node content, but "
                                     "found '<stream end>'; fix the file's syntax"]
