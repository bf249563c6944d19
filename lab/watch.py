"""For `lab status` and the end of `lab up`: is the deployed cloud watched and restorable? Per site, what its
own Prometheus says (asked with the stack's monitoring operator identity, as any operator would): targets
up, alerts firing, the newest verified backup and the last restore drill with its RTO and RPO."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

QUERIES = {
    "backup": "max by (site) (sovcloud_backup_last_success_timestamp_seconds)",
    "drill": "max by (site) (sovcloud_restore_drill_last_timestamp_seconds)",
    "drill_ok": "min by (site) (sovcloud_restore_drill_success)",
    "rto": "max by (site) (sovcloud_restore_drill_rto_seconds)",
    "rpo": "max by (site) (sovcloud_restore_drill_rpo_seconds)",
}


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m ago"
    return f"{seconds // 60}m{seconds % 60:02d}s ago"


def site_watch(prometheus: str, site: str, identity: Path, timeout: float = 5) -> dict:
    """One site's row: its Prometheus' targets and alerts, newest backup, last drill (None where unknown)."""
    import httpx

    context = ssl.create_default_context(cafile=str(identity / "ca.pem"))
    context.load_cert_chain(identity / "operator.pem", identity / "operator.key")
    try:
        with httpx.Client(verify=context, timeout=timeout) as client:
            targets = client.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
            alerts = client.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"]

            def value(name: str) -> float | None:
                result = client.get(f"{prometheus}/api/v1/query", params={"query": QUERIES[name]}).json()
                rows = [r for r in result["data"]["result"] if r["metric"].get("site") == site]
                return float(rows[0]["value"][1]) if rows else None

            values = {name: value(name) for name in QUERIES}
    except (httpx.HTTPError, OSError, KeyError, ValueError) as err:
        return {"site": site, "prometheus": prometheus, "error": f"{type(err).__name__}: {err}"}
    now = time.time()
    return {"site": site, "prometheus": prometheus,
            "targets_up": sum(t["health"] == "up" for t in targets), "targets": len(targets),
            "firing": sorted({a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}),
            "last_backup": _ago(now - values["backup"]) if values["backup"] else None,
            "last_drill": (f"{_ago(now - values['drill'])}, {'ok' if values['drill_ok'] == 1 else 'FAILED'}, "
                           f"RTO {values['rto']:.1f}s RPO {values['rpo']:.1f}s") if values["drill"] else None}


def table(sites: dict, identity: str) -> list[list[str]]:
    """What `lab status` prints under the deployed sites: a header and a row per monitored site ([] if none)."""
    rows = [["site", "targets up", "firing", "newest backup", "last restore drill"]]
    for name, site in sites.items():
        if not site.get("monitoring"):
            continue
        w = site_watch(site["monitoring"]["prometheus"], name, Path(identity))
        if "error" in w:
            rows.append([name, "-", f"Prometheus unreachable ({w['error'][:60]})", "-", "-"])
            continue
        rows.append([name, f"{w['targets_up']}/{w['targets']}", ", ".join(w["firing"]) or "none",
                     w["last_backup"] or "none yet", w["last_drill"] or "none yet"])
    return rows if len(rows) > 1 else []
