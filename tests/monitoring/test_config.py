"""Exporter configs: bad input fails before anything runs, naming the field."""

import subprocess
import sys

import pytest

from monitoring.exporters import config

GOOD = {"source_site": "dc-astana",
        "targets": [{"site": "dc-almaty", "service": "gateway", "url": "http://127.0.0.1:1/healthz"}]}


def test_good_prober_config_parses():
    cfg = config.parse("prober", GOOD)
    assert cfg.targets[0].expected_status == [200]
    assert cfg.timeout_seconds < cfg.interval_seconds


@pytest.mark.parametrize(("data", "field", "hint"), [
    ({**GOOD, "timeout_secs": 3}, "timeout_secs", "Extra inputs are not permitted"),
    ({**GOOD, "targets": [{**GOOD["targets"][0], "service": "ftp"}]}, "targets[0].service", "'api'"),
    ({**GOOD, "targets": [{**GOOD["targets"][0], "url": "not a url"}]}, "targets[0].url", "URL"),
    ({**GOOD, "targets": [{**GOOD["targets"][0], "site": "dc-astana"}]}, "targets[0].site", "OTHER sites"),
    ({**GOOD, "timeout_seconds": 20, "interval_seconds": 10}, "timeout_seconds", "below interval_seconds"),
    ({**GOOD, "targets": []}, "targets", "at least 1"),
    ({"source_site": "dc-astana"}, "targets", "Field required"),
    ({**GOOD, "targets": [{**GOOD["targets"][0], "client_cert_file": "/p.crt"}]}, "targets[0]", "give both"),
    ({**GOOD, "verify_tls": False, "targets": [{**GOOD["targets"][0], "client_cert_file": "/p.crt",
                                                "client_key_file": "/p.key"}]}, "verify_tls", "false would"),
])
def test_bad_prober_config_names_field(data, field, hint):
    with pytest.raises(config.ConfigError) as e:
        config.parse("prober", data, "prober.yaml")
    msg = str(e.value)
    assert msg.startswith("invalid prober exporter config prober.yaml:\n")
    assert f"\n  {field}: " in msg and hint in msg


@pytest.mark.parametrize(("kind", "data", "field"), [
    ("backup", {"stores": [{"site": "dc-a", "endpoint_url": "http://127.0.0.1:1", "bucket": 3}]}, "stores[0].bucket"),
    ("drills", {"stores": [{"site": "dc-a", "endpoint_url": "http://127.0.0.1:1"}]}, "sites"),
    ("certs", {}, "paths/endpoints"),
    ("transport", {"command": []}, "command"),
    ("transport", {"peers": [{"public_key": "k", "site": "Bad Site"}]}, "peers[0].site"),
])
def test_bad_other_configs_name_field(kind, data, field):
    with pytest.raises(config.ConfigError, match=rf"  {__import__('re').escape(field)}:"):
        config.parse(kind, data)


def test_cli_rejects_bad_config_with_exit_2(tmp_path):
    bad = tmp_path / "prober.yaml"
    bad.write_text("source_site: dc-astana\ntargets:\n  - {site: dc-almaty, service: gateway, url: nope}\n")
    r = subprocess.run([sys.executable, "-m", "monitoring.exporters", "prober", "--config", str(bad),
                        "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith(f"error: invalid prober exporter config {bad}:\n")
    assert "  targets[0].url: " in r.stderr and "Traceback" not in r.stderr
