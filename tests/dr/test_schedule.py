"""The tenants' backup schedules (dr/schedule.py): cron as cron reads it, the ConfigMap the tenant chart
renders, and what is due."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from dr import schedule
from dr.schedule import Cron, ScheduleError
from infra import config as cfg
from infra.components import render_tenant_chart
from tests.infra.conftest import lab_data


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("expr", "now", "due"), [
    ("30 1 * * *", "2026-12-01T17:40:10", "2026-12-01T01:30:00"),
    ("30 1 * * *", "2026-12-01T01:29:59", "2026-11-30T01:30:00"),
    ("*/15 * * * *", "2026-12-01T17:44:00", "2026-12-01T17:30:00"),
    ("0 2 * * 0", "2026-12-01T00:00:00", "2026-11-29T02:00:00"),  # Sunday; 7 is Sunday too
    ("0 2 * * 7", "2026-12-01T00:00:00", "2026-11-29T02:00:00"),
    ("0 0 1 * 1", "2026-12-01T12:00:00", "2026-12-01T00:00:00"),  # both day fields: either matches
    ("0 6 1-5 12 *", "2026-12-03T05:00:00", "2026-12-02T06:00:00"),
])
def test_the_last_due_time_is_the_latest_matching_minute(expr, now, due):
    assert Cron(expr).last_due(at(now)) == at(due)


@pytest.mark.parametrize(("expr", "message"), [
    ("30 1 * *", "need 5 fields"), ("61 * * * *", "minute '61': outside 0-59"),
    ("* * * * mon", "day of week 'mon'"), ("0 0 30 2 *", "not due once in 62 days"),
])
def test_a_bad_schedule_names_the_field(expr, message):
    with pytest.raises(ScheduleError, match=message):
        Cron(expr).last_due(at("2026-12-01T00:00:00"))


def test_the_tenant_charts_configmap_is_read_as_rendered():
    tenant = cfg.parse(lab_data()).tenants[0]
    cm = next(m for m in render_tenant_chart(tenant, "gov.kz") if m["metadata"]["name"] == "backup-schedule")
    assert cm["metadata"]["labels"]["sovcloud.kz/backup-schedule"] == "true"  # what schedule.LABEL selects
    parsed = schedule.parse(cm["metadata"]["namespace"], cm["data"])
    assert parsed.agency == "egov" and parsed.cron.expression == "30 1 * * *"
    assert parsed.namespaces == ["egov-prod"] and parsed.kinds == {"egov-prod": ["pvc"]}
    with pytest.raises(ScheduleError, match="configmap ns/backup-schedule"):
        schedule.parse("ns", {"backup.yaml": yaml.safe_dump({"schedule": "daily"})})


def test_an_unreachable_cluster_api_is_one_line_naming_it_not_a_traceback(keys, tmp_path, capsys):
    """What the station's tenants job prints while its site's API is down (the stack's retry picks it up later)."""
    from dr.__main__ import main

    (kubeconfig := tmp_path / "kubeconfig").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],  # discard: refused at once
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    (conf := tmp_path / "dr.yaml").write_text(yaml.safe_dump({
        "sites": [{"name": "dc-astana", "endpoint": "http://127.0.0.1:9", "credentials_file": str(tmp_path / "c")}],
        "primary": "dc-astana", "kek_file": str(keys / "kek"), "verify_key_file": str(keys / "verify.pem"),
        "staging_dir": str(tmp_path / "staging")}))
    (tmp_path / "c").write_text('{"access_key": "a", "secret_key": "s"}')
    assert main(["--config", str(conf), "scheduled", "--kubeconfig", str(kubeconfig)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot list the tenants' backup schedules at https://127.0.0.1:9: ") and (
        err.count("\n") == 1), err
