"""The DR config's object lock: COMPLIANCE only, at least as long as the retention policy keeps a backup; bad
input fails naming the field and the fix."""

from __future__ import annotations

import json

import pytest
import yaml

from dr.config import ConfigError, Retention, load_config


def write(tmp_path, site: dict | None = None, **top):
    creds = tmp_path / "writer.json"
    creds.write_text(json.dumps({"access_key": "w", "secret_key": "ws"}))
    (tmp_path / "verify.pem").write_text("a public key\n")
    data = {
        "sites": [
            {"name": "dc-a", "endpoint": "http://127.0.0.1:1", "credentials_file": "writer.json", **(site or {})}
        ],
        "primary": "dc-a",
        "verify_key_file": "verify.pem",
        "staging_dir": "staging",
        **top,
    }
    path = tmp_path / "dr.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("daily", "weekly", "monthly", "days", "tier"),
    [
        (7, 4, 6, 186, "retention.monthly=6"),
        (7, 8, 1, 56, "retention.weekly=8"),
        (30, 2, 0, 30, "retention.daily=30"),
        (0, 0, 0, 0, "retention.daily=0"),
    ],
)
def test_retention_horizon(daily, weekly, monthly, days, tier):
    r = Retention(daily=daily, weekly=weekly, monthly=monthly)
    assert r.horizon() == (days, tier)
    assert r.horizon_days() == max(1, days)  # S3 locks for a day at least


def test_lock_defaults_to_compliance_for_the_retention_horizon(tmp_path):
    cfg = load_config(write(tmp_path))
    s = cfg.sites[0]
    assert (s.object_lock_mode, s.object_lock_retain_days) == ("COMPLIANCE", 186)
    cfg = load_config(write(tmp_path, retention={"daily": 3, "weekly": 2, "monthly": 0}))
    assert cfg.sites[0].object_lock_retain_days == 14


def test_lock_longer_than_the_horizon_is_kept(tmp_path):
    assert load_config(write(tmp_path, {"object_lock_retain_days": 400})).sites[0].object_lock_retain_days == 400


def test_lock_shorter_than_the_retention_policy_is_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {"object_lock_retain_days": 30}))
    msg = str(e.value)
    assert msg.startswith(f"invalid DR config {tmp_path / 'dr.yaml'}:\n")
    assert "  sites[0].object_lock_retain_days: 30 days is shorter than the retention policy" in msg
    assert "retention.monthly=6: up to 186 days" in msg and "set it to at least 186" in msg
    assert "leave it out to derive it" in msg


@pytest.mark.parametrize("mode", ["GOVERNANCE", "governance", "OFF"])
def test_only_compliance_mode(tmp_path, mode):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {"object_lock_mode": mode}))
    msg = str(e.value)
    assert f"  sites[0].object_lock_mode: {mode!r} is not allowed: set COMPLIANCE" in msg


def test_zero_days_is_no_way_to_switch_the_lock_off(tmp_path):
    with pytest.raises(ConfigError, match=r"sites\[0\]\.object_lock_retain_days: Input should be greater than or "):
        load_config(write(tmp_path, {"object_lock_retain_days": 0}))


def test_the_old_governance_field_is_named_with_its_replacement(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {"object_lock_days": 0}))
    msg = str(e.value)
    assert "  sites[0].object_lock_days: was replaced by object_lock_retain_days" in msg
    assert "remove object_lock_days" in msg


def test_admin_keys_relative_to_the_config_and_falling_back_to_the_writers(tmp_path):
    s = load_config(write(tmp_path)).sites[0]
    assert s.admin_credentials_file is None and s.admin_credentials() == s.credentials() == ("w", "ws")
    (tmp_path / "admin.json").write_text(json.dumps({"access_key": "a", "secret_key": "as"}))
    s = load_config(write(tmp_path, {"admin_credentials_file": "admin.json"})).sites[0]
    assert s.admin_credentials_file == tmp_path / "admin.json" and s.admin_credentials() == ("a", "as")
    (tmp_path / "admin.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"  sites\[dc-a\]\.admin_credentials_file: .*admin\.json: need JSON"):
        s.admin_credentials()
