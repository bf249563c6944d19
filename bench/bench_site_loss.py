"""Whole-site loss on the running default lab: the site that serves the stack's published service is cut off
(its gateway node stopped: its Internet edge and its transport tunnels go with it), the loss is detected by the
surviving site's own monitoring, the service fails over to the survivor from the backup held there, its data
changes there, the site comes back, and the service fails back without losing that change.

    .venv/bin/python -m bench.bench_site_loss

Reported, from the deployed system's own clocks and metrics where it has them:
- detection: cut -> SiteDown{target_site} active at the survivor's Alertmanager (its `startsAt` too);
- RTO: cut -> the service answering at the survivor with the restored data (detection + the runbook), and the
  runbook's own steps (fence, restore, total);
- RPO: the age of the victim's newest backup at the survivor's store at the moment of the cut, as the
  survivor's Prometheus read it (sovcloud_backup_age_seconds), and the age of the backup actually restored;
- failback: its time, and whether the data changed during the failover is what the original site serves.
Exit 1 if the survivor never served the data or the failback lost the change. Bounded: each wait has its limit
(detection 300 s, recovery 300 s); the lab is left as it was (nothing published, every node up).
"""

from __future__ import annotations

import json
import ssl
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from common.wait import until
from dr import jobs, layout, runbook
from dr.config import load_config
from lab import api, cluster, inventory
from lab.config import load
from lab.deploy import lab_stack
from lab.nodes import start_node, wait_booted, wait_ssh
from lab.podman import podman
from toolchain import REPO

STACK = REPO / "infra" / "stacks" / "lab.yaml"


def operator_client(outputs: dict, work: Path) -> httpx.Client:
    """An httpx client with the stack's operator identity, which every monitoring endpoint requires."""
    mon = outputs["monitoring"]
    for name, pem in (("ca.pem", mon["ca_pem"]), ("operator.pem", mon["operator"]["cert_pem"]),
                      ("operator.key", mon["operator"]["key_pem"])):
        (work / name).write_text(pem)
    context = ssl.create_default_context(cafile=str(work / "ca.pem"))
    context.load_cert_chain(work / "operator.pem", work / "operator.key")
    return httpx.Client(verify=context, timeout=10)


def site_down(client: httpx.Client, alertmanager: str, site: str) -> dict | None:
    alerts = client.get(f"{alertmanager}/api/v2/alerts").raise_for_status().json()
    return next((a for a in alerts if a["labels"]["alertname"] == "SiteDown"
                 and a["labels"].get("target_site") == site and a["status"]["state"] == "active"), None)


def backup_age(client: httpx.Client, prometheus: str, origin: str, dataset: str, store: str,
               at: float | None = None) -> float | None:
    params = {"query": f'sovcloud_backup_age_seconds{{site="{origin}",dataset="{dataset}",store_site="{store}"}}'}
    if at is not None:
        params["time"] = f"{at:.3f}"
    result = client.get(f"{prometheus}/api/v1/query", params=params).raise_for_status().json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def write(directory: Path, orders: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.html").write_text("<h1>eGov portal</h1>\n")
    (directory / "orders.json").write_text(json.dumps({"orders": orders}) + "\n")
    return directory


def main() -> int:
    cfg = load()
    state_dir = inventory.state_dir(cfg)
    outputs = {k: v.value for k, v in lab_stack(cfg).outputs().items()}
    sites = runbook.StackSites(outputs)
    entry = yaml.safe_load(STACK.read_text())["gateway"]["published_services"][0]
    svc = runbook.Service(entry["name"], entry["hostname"], f"{entry['name']}-sitebench")
    victim = entry["site"]
    survivor = next(s.name for s in cfg.sites if s.name != victim)
    endpoints = outputs["monitoring"]["endpoints"][survivor]
    gateway = cfg.container(cfg.site(victim).gateway.name)
    report: dict = {"victim": victim, "survivor": survivor}
    with tempfile.TemporaryDirectory(prefix="bench-site-loss-") as tmp, \
            operator_client(outputs, Path(tmp)) as client:
        work = Path(tmp)
        dr_cfg = load_config(state_dir / "dr" / "dr.json").model_copy(update={"staging_dir": work / "staging"})
        cut = False
        try:
            sites.publish(victim, svc, write(work / "v1", 1))
            rep = jobs.backup_dir(dr_cfg, work / "v1", svc.dataset, victim)
            assert rep.verified_sites == [victim, survivor], rep.to_dict()
            # Steady state before the cut: the survivor's exporter has read that backup at its own store.
            until(lambda: (age := backup_age(client, endpoints["prometheus"], victim, svc.dataset, survivor))
                  is not None and age < 600, seconds=180, every=5,
                  what=f"{survivor}'s Prometheus reading {victim}'s backup of {svc.dataset} at {survivor}'s store")

            cut_at, t0 = time.time(), time.monotonic()
            podman("stop", "-t", "2", gateway, timeout=60)
            cut = True
            alert = until(lambda: site_down(client, endpoints["alertmanager"], victim), seconds=300, every=2,
                          what=f"SiteDown{{target_site={victim}}} at {survivor}'s Alertmanager")
            report["detection_s"] = round(time.monotonic() - t0, 1)
            report["alert_starts_after_cut_s"] = round(
                layout.epoch(alert["startsAt"]) - cut_at, 1)
            report["rpo_metric_at_cut_s"] = backup_age(client, endpoints["prometheus"], victim, svc.dataset,
                                                       survivor, at=cut_at)

            fo = runbook.failover(dr_cfg, sites, svc, victim, survivor)
            report["rto_s"] = round(time.monotonic() - t0, 1)
            report["failover_steps_s"] = fo["seconds"]
            stamp = fo["restored_backup"].rsplit("@", 1)[1]
            report["rpo_restored_s"] = round(cut_at - layout.parse_stamp(stamp).timestamp(), 1)
            served = sites.get(survivor, svc, "/orders.json").json() == {"orders": 1}
            report["survivor_served_the_backup"] = served

            # Life goes on at the survivor while the victim is away.
            sites.publish(survivor, svc, write(work / "v2", 2))
            t1 = time.monotonic()
            start_node(gateway)
            ip = cfg.site(victim).ip(cfg.site(victim).gateway)
            wait_ssh(ip, deadline_s=90)
            wait_booted(ip, deadline_s=90)
            cluster.wait_ready(cfg.site(victim), state_dir, deadline_s=180)
            until(lambda: site_down(client, endpoints["alertmanager"], victim) is None, seconds=300, every=5,
                  what=f"SiteDown{{target_site={victim}}} resolved")
            cut = False
            report["recovered_s"] = round(time.monotonic() - t1, 1)

            fb = runbook.failback(dr_cfg, sites, svc, survivor, victim, fo["state"])
            report["failback_steps_s"] = fb["seconds"]
            report["failback_kept_the_change"] = sites.get(victim, svc, "/orders.json").json() == {"orders": 2}
        finally:
            if cut:
                start_node(gateway)
            for site in (victim, survivor):
                sites.unpublish(site, svc)
            api.wait_healthy(cfg, deadline_s=300)
    print(json.dumps(report, indent=2))
    return 0 if report.get("survivor_served_the_backup") and report.get("failback_kept_the_change") else 1


if __name__ == "__main__":
    raise SystemExit(main())
