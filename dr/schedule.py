"""The tenants' own backup schedules: each tenant's `backup-schedule` ConfigMap (charts/tenant) says when its
datasets are backed up (a 5-field cron expression, UTC). `python -m dr scheduled`, run every few minutes by
its site's station (a systemd timer, infra/site_backups.py), backs up every namespace whose newest backup is
older than its schedule's last due time.

What a dataset backup holds: the namespace's objects (dr/k8s.py: what a restore recreates, the sentinel that
proves the RPO) and the dump of each pod that declares its dump and load commands (dr/hooks.py). A volume
claim mounted by a pod that declares none is listed as not backed up in the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import urllib3
import yaml

from dr import hooks, jobs, layout, restore
from dr.config import DrConfig

LABEL = "sovcloud.kz/backup-schedule=true"
# How far back a schedule's last due time is looked for: a yearly expression is not a backup schedule.
MAX_LOOKBACK = timedelta(days=62)
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


class ScheduleError(ValueError):
    pass


def _field(text: str, name: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if rng == "*":
                a, b = low, high
            elif "-" in rng:
                a, b = (int(x) for x in rng.split("-", 1))
            else:
                a = b = int(rng)
        except ValueError:
            raise ScheduleError(f"{name} {part!r}: use *, N, N-M, a list of them and /STEP") from None
        if not (low <= a <= b <= high) or step < 1:
            raise ScheduleError(f"{name} {part!r}: outside {low}-{high}")
        values.update(range(a, b + 1, step))
    return values


@dataclass(frozen=True)
class Cron:
    """A 5-field cron expression (minute hour day-of-month month day-of-week; UTC), as cron reads it: when both
    day fields are restricted, either matching is enough."""

    expression: str

    def __post_init__(self) -> None:
        self.fields()  # refuse a bad expression at once

    def fields(self) -> list[set[int]]:
        parts = self.expression.split()
        if len(parts) != 5:
            raise ScheduleError(f"schedule {self.expression!r}: need 5 fields (minute hour day month weekday)")
        out = [_field(p, n, lo, hi) for p, (n, lo, hi) in zip(parts, _FIELDS, strict=True)]
        out[4] = {d % 7 for d in out[4]}  # 7 is Sunday too
        return out

    def matches(self, t: datetime) -> bool:
        minute, hour, dom, month, dow = self.fields()
        parts = self.expression.split()
        day_ok = ((t.day in dom) or ((t.weekday() + 1) % 7 in dow) if parts[2] != "*" and parts[4] != "*"
                  else (t.day in dom) and ((t.weekday() + 1) % 7 in dow))
        return t.minute in minute and t.hour in hour and t.month in month and day_ok

    def last_due(self, now: datetime) -> datetime:
        """The latest minute at or before `now` the expression matches."""
        t = now.astimezone(UTC).replace(second=0, microsecond=0)
        end = t - MAX_LOOKBACK
        while t > end:
            if self.matches(t):
                return t
            t -= timedelta(minutes=1)
        raise ScheduleError(f"schedule {self.expression!r} is not due once in {MAX_LOOKBACK.days} days")


@dataclass
class Schedule:
    """One tenant's `backup-schedule` ConfigMap."""

    agency: str
    cron: Cron
    namespaces: list[str]
    kinds: dict[str, list[str]] = field(default_factory=dict)  # namespace -> dataset kinds declared there


def parse(namespace: str, data: dict) -> Schedule:
    """The ConfigMap's `backup.yaml` (charts/tenant/templates/backup-schedule.yaml)."""
    where = f"configmap {namespace}/backup-schedule"
    try:
        doc = yaml.safe_load(data["backup.yaml"]) or {}
        cron = Cron(str(doc["schedule"]))
        datasets = doc.get("datasets") or []
        kinds: dict[str, list[str]] = {}
        for d in datasets:
            kinds.setdefault(str(d["namespace"]), []).append(str(d.get("kind", "")))
    except (KeyError, TypeError, yaml.YAMLError, ScheduleError) as err:
        raise ScheduleError(f"{where}: {err}") from None
    return Schedule(str(doc.get("agency", namespace)), cron, sorted(kinds), kinds)


def schedules(api) -> tuple[list[Schedule], list[str]]:
    """Every tenant's schedule on the cluster, and the errors of those that cannot be read."""
    from kubernetes import client

    found, errors = [], []
    try:
        listed = client.CoreV1Api(api).list_config_map_for_all_namespaces(label_selector=LABEL).items
    except (client.ApiException, urllib3.exceptions.HTTPError) as err:
        why = getattr(err, "reason", err)
        raise ScheduleError(f"cannot list the tenants' backup schedules at {api.configuration.host}: {why}") from None
    for cm in listed:
        try:
            found.append(parse(cm.metadata.namespace, cm.data or {}))
        except ScheduleError as err:
            errors.append(str(err))
    return found, errors


def newest_backup(cfg: DrConfig, origin: str, dataset: str) -> datetime | None:
    """The newest backup of the dataset found at any site (None: never backed up)."""
    newest = None
    for s in cfg.sites:
        try:
            stamp = layout.parse_stamp(restore.latest_timestamp(cfg, s, origin, dataset))
        except Exception:  # noqa: BLE001, S112 - none there, or the site unreachable: the other sites answer
            continue
        newest = stamp if newest is None or stamp > newest else newest
    return newest


def run(cfg: DrConfig, api, site: str, now: datetime | None = None) -> dict:
    """Back up what is due; returns per namespace what was done and why."""
    now = now or datetime.now(UTC)
    found, errors = schedules(api)
    results: dict[str, dict] = {}
    for sched in found:
        due_at = sched.cron.last_due(now)
        for ns in sched.namespaces:
            dataset = f"k8s-{ns}"
            newest = newest_backup(cfg, site, dataset)
            entry = {"agency": sched.agency, "schedule": sched.cron.expression, "due": due_at.isoformat(),
                     "newest": newest.isoformat() if newest else None}
            if newest is not None and newest >= due_at:
                results[ns] = {**entry, "action": "none: the newest backup is after the last due time"}
                continue
            try:
                report = jobs.backup_k8s(cfg, api, ns, site)
            except hooks.HookError as err:  # this tenant's dump failed; the others are still backed up
                results[ns] = {**entry, "action": "failed", "good": False, "error": str(err)}
                continue
            results[ns] = {**entry, "action": "backed up", "good": report.good, "report": report.to_dict(),
                           "not_backed_up": report.source.get("not_backed_up", [])}
    return {"site": site, "now": now.isoformat(), "namespaces": results, "errors": errors,
            "schedules": [asdict(s) | {"cron": s.cron.expression} for s in found]}
