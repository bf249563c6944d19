"""Issue 7 acceptance on the lab: stopping dc-almaty's gateway fires SiteDown and the SLO burn-rate alerts
for dc-almaty in a real Prometheus fed by the real exporters; starting it again resolves them.

Where the monitoring stations run. The exporters and Prometheus are host processes (the project venv and
the `prometheus` binary: the lab nodes are offline images with neither), each started inside a site's
network namespace (`nsenter -n` into the site's first worker, where production runs them as pods). Not in
the host's own namespace: the host is wired into every site LAN (the podman bridges), so from there
dc-almaty's S3 stays reachable while its gateway is down and "unreachable from every other site"
(SiteDown) could never become true. From a worker, a cross-site probe takes the path inter-site traffic
takes (site LAN -> own gateway -> WireGuard -> other gateway) and fails exactly when that path does.

Each site's station runs: the prober of the other site's API LB (/readyz with a prober identity issued
by that site's Kubernetes CA: anonymous requests are rejected by design, and the identity may read
nothing but the public health and discovery endpoints), gateway health endpoint and S3; the backup
freshness exporter over both sites' S3 (signed manifests, the lab's DR verify key); certificate expiry
of its PKI and its API endpoint; and its gateway's WireGuard state (`wg show all dump` over ssh).
The prober checks its own gateway's health endpoint before and after every round (nginx there runs only
while the tunnel interface is up) and skips rounds made while its own site was cut off.
Prometheus sits with the primary site's station and scrapes dc-almaty's over the transport, as a
monitoring station in one site would: the isolated site's own verdict ("every other site is down") then
cannot reach it, which is what keeps a two-site deployment from paging for dc-astana as well.

Rules are the committed ones time-scaled by rulegen (SCALE 30: SiteDown `for: 2m` -> 4 s, fast burn
windows 1h/5m -> 120 s/10 s, slow 6h/30m -> 720 s/60 s). Probes every 2 s with a 1.8 s timeout: the shared
lab host runs at load 30+ on 2 cores, a TLS probe through two userspace WireGuard hops took up to 0.46 s
with curl, and at 99.982% a single failed probe IS a budget burn (one per window of a single source), so
a tight timeout would page on a healthy lab. The short window still holds five probes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from infra import pki
from infra.components import HEALTH_PORT
from lab import api, cluster, inventory, s3
from lab.nodes import pid, ssh, ssh_args, start_node, wait_booted, wait_ssh
from lab.podman import podman
from tests.monitoring.prom import alerts, firing, query, start_exporter, start_prometheus, stop, wait_until

pytestmark = pytest.mark.lab
SCALE = 30
VICTIM, OTHER = "dc-almaty", "dc-astana"
PORTS = {"prober": 19470, "backup": 19471, "certs": 19473, "transport": 19474}
PROM_PORT = 19090
INTERVAL, TIMEOUT = 2.0, 1.8  # prober, and Prometheus' scrape/evaluation interval
SITE_DOWN_FOR, FAST_SHORT_WINDOW = 120 / SCALE, 300 / SCALE
STOP_GRACE = 2  # podman stop -t
DETECT = 3 * INTERVAL  # probe timeout + scrape + rule evaluation (+ our 0.25 s poll)
BURNS = {"SLOErrorBudgetBurnFast", "SLOErrorBudgetBurnSlow"}


def worker(site):
    return next(n for n in site.nodes if n.role == "worker")


def prober_config(cfg, site, workdir: Path) -> dict:
    targets = []
    for other in cfg.sites:
        if other is site:
            continue
        p = cluster.site_dir(other, inventory.state_dir(cfg)) / "pki"
        ca = workdir / f"{other.name}-ca.pem"  # root + issuing CA: the apiserver sends only its leaf
        ca.write_text((p / "root-ca.crt").read_text() + (p / "kubernetes-ca.crt").read_text())
        kube_ca = pki.KeyPair((p / "kubernetes-ca.crt").read_text(), (p / "kubernetes-ca.key").read_text())
        ident = pki.issue_certificate(kube_ca, f"sovcloud-prober-{site.name}", server=False, client=True, days=1)
        cert, key = workdir / f"prober-{other.name}.crt", workdir / f"prober-{other.name}.key"
        cert.write_text(ident.cert_pem)
        key.touch(mode=0o600)
        key.write_text(ident.key_pem)
        gw = other.ip(other.gateway)
        targets += [
            {"site": other.name, "service": "api", "url": f"{cluster.api_endpoint(other)}/readyz",
             "ca_file": str(ca), "client_cert_file": str(cert), "client_key_file": str(key)},
            {"site": other.name, "service": "gateway", "url": f"http://{gw}:{HEALTH_PORT}/healthz"},
            {"site": other.name, "service": "s3", "url": f"{s3.endpoint(other)}/healthz"},
        ]
    own_gw = f"http://{site.ip(site.gateway)}:{HEALTH_PORT}/healthz"
    return {"source_site": site.name, "interval_seconds": INTERVAL, "timeout_seconds": TIMEOUT,
            "local_check_url": own_gw, "targets": targets}


def backup_config(dr: dict) -> tuple[dict, dict]:
    """Both sites' stores as the DR config names them; credentials go to the exporter's environment."""
    stores, env = [], {}
    for i, s in enumerate(dr["sites"]):
        creds = json.loads(Path(s["credentials_file"]).read_text())
        env[f"S3_{i}_ACCESS_KEY"], env[f"S3_{i}_SECRET_KEY"] = creds["access_key"], creds["secret_key"]
        stores.append({"site": s["name"], "endpoint_url": s["endpoint"], "access_key_env": f"S3_{i}_ACCESS_KEY",
                       "secret_key_env": f"S3_{i}_SECRET_KEY"})
    return {"interval_seconds": 5, "timeout_seconds": 3, "stores": stores,
            "verify_key_file": dr["verify_key_file"]}, env


def wg_public_key(site) -> str:
    r = ssh(site.ip(site.gateway), "sudo wg show wg0 public-key", timeout=30)
    assert r.returncode == 0, f"{site.gateway.name}: wg show: {r.stderr}"
    return r.stdout.strip()


def start_station(cfg, site, workdir: Path, dr: dict, pubkeys: dict[str, str]) -> tuple[str, list]:
    """The four exporters of one site, in its first worker's network namespace; returns (ip, processes)."""
    ip, ns = site.ip(worker(site)), pid(cfg.container(worker(site).name))
    workdir.mkdir()
    backup, env = backup_config(dr)
    gw = site.ip(site.gateway)
    configs = {
        "prober": prober_config(cfg, site, workdir),
        "backup": backup,
        "certs": {"interval_seconds": 5, "timeout_seconds": 3,
                  "paths": [str(cluster.site_dir(site, inventory.state_dir(cfg)) / "pki")],
                  "endpoints": [{"host": gw, "port": cluster.API_PORT}]},
        "transport": {"interval_seconds": 5, "timeout_seconds": 4,
                      "command": [*ssh_args(gw), "sudo wg show all dump"],
                      "peers": [{"public_key": pubkeys[o.name], "site": o.name} for o in cfg.sites if o is not site]},
    }
    procs = [start_exporter(kind, c, f"{ip}:{PORTS[kind]}", workdir, netns_pid=ns, env=env)
             for kind, c in configs.items()]
    return ip, procs


def values(prom: str, expr: str) -> list[float]:
    return [float(r["value"][1]) for r in query(prom, expr)]


def baseline_green(prom: str, n_sites: int) -> bool:
    """Every exporter scraped and refreshing, every probe up, backups/certs/tunnels read from the lab."""
    n_exporters = n_sites * len(PORTS)
    return (values(prom, 'up{job=~"sovcloud-.*"}') == [1.0] * n_exporters
            and values(prom, "sovcloud_exporter_refresh_success") == [1.0] * n_exporters
            and values(prom, "sovcloud_probe_up") == [1.0] * (n_sites * (n_sites - 1) * 3)
            and values(prom, "sovcloud_transport_tunnel_up") == [1.0] * n_sites * (n_sites - 1)
            and values(prom, 'count(sovcloud_tls_version_info{version=~"TLSv1.[23]"})') == [float(n_sites)]
            and values(prom, 'count(sovcloud_backup_last_success_timestamp_seconds{offsite="true"} > 0)') != [])


def restore_gateway(cfg, site) -> dict:
    """Back to the state the lab was in: node booted (its tunnel, firewall and proxies start from what the
    stack installed), API ready."""
    gw = site.ip(site.gateway)
    if podman("inspect", "-f", "{{.State.Running}}", cfg.container(site.gateway.name)).strip() != "true":
        start_node(cfg.container(site.gateway.name))
    wait_ssh(gw, deadline_s=90)
    state = wait_booted(gw, deadline_s=90)
    cluster.wait_ready(site, deadline_s=120)
    return {"systemd": state}


def open_station_ports(cfg, site, open_: bool) -> None:
    """The stations are test processes in a worker's network namespace, behind that worker's host firewall
    (SC-HST-04), which admits nothing on their ports: let the sites' subnets in while the test runs, and
    reload the node's own ruleset afterwards."""
    w = cfg.container(worker(site).name)
    if open_:
        sources = ", ".join(str(s.subnet) for s in cfg.sites)
        ports = ", ".join(str(p) for p in (*PORTS.values(), PROM_PORT))
        podman("exec", w, "nft", "insert", "rule", "inet", "sovcloud_host", "input", "ip", "saddr",
               f"{{ {sources} }}", "tcp", "dport", f"{{ {ports} }}", "accept")
    else:
        podman("exec", w, "systemctl", "reload", "sovcloud-firewall")


@pytest.mark.timeout(900)
def test_stopping_a_site_fires_site_down_and_burn_alerts_and_restoring_resolves(lab_deployment, tmp_path):
    cfg = lab_deployment["config"]
    victim = cfg.site(VICTIM)
    dr = json.loads((inventory.state_dir(cfg) / "dr" / "dr.json").read_text())
    primary = cfg.site(dr["primary"])
    pubkeys = {s.name: wg_public_key(s) for s in cfg.sites}
    procs, stopped, seen_other = [], False, []
    times: dict[str, float] = {}

    def watch(done, deadline_s: float, what: str):
        """Poll until done(); every alert of the healthy site seen on the way is recorded."""
        def step():
            seen_other.extend((a["labels"]["alertname"], a["state"]) for a in alerts(prom, target_site=OTHER))
            return done()
        return wait_until(step, deadline_s, what, every_s=0.25)

    try:
        ips = {}
        for site in cfg.sites:
            open_station_ports(cfg, site, True)
            ips[site.name], ps = start_station(cfg, site, tmp_path / site.name, dr, pubkeys)
            procs += ps
        sites = [{"name": s.name, "exporters": {k: f"{ips[s.name]}:{p}" for k, p in PORTS.items()}}
                 for s in cfg.sites]
        mon = tmp_path / "prometheus"
        mon.mkdir()
        procs.append(start_prometheus(sites, f"{ips[primary.name]}:{PROM_PORT}", mon, SCALE, f"{INTERVAL:g}s",
                                      netns_pid=pid(cfg.container(worker(primary).name))))
        prom = f"http://{ips[primary.name]}:{PROM_PORT}"

        wait_until(lambda: baseline_green(prom, len(cfg.sites)), 90, "every exporter green on the lab")
        # Hold the baseline longer than SiteDown's `for:` and the fast short window: nothing may fire.
        t_end = time.monotonic() + FAST_SHORT_WINDOW + SITE_DOWN_FOR + DETECT
        while time.monotonic() < t_end:
            assert firing(prom) == set(), (f"alerts firing on the healthy lab: {alerts(prom)}; failed probes: "
                                           f"{query(prom, 'sovcloud_probe_failures_total > 0')}")
            time.sleep(0.5)
        assert baseline_green(prom, len(cfg.sites))
        pending = sorted({a["labels"]["alertname"] for a in alerts(prom)})

        t0 = time.monotonic()
        stopped = True
        podman("stop", "-t", str(STOP_GRACE), cfg.container(victim.gateway.name), timeout=60)
        times["podman stop"] = time.monotonic() - t0
        watch(lambda: "SiteDown" in firing(prom, target_site=VICTIM), 60, f"SiteDown for {VICTIM}")
        times["SiteDown fired"] = time.monotonic() - t0
        watch(lambda: all("SLOErrorBudgetBurnFast" in firing(prom, target_site=VICTIM, service=svc)
                          for svc in ("api", "gateway", "s3")), 60, f"fast burn alert of every {VICTIM} service")
        times["fast burn fired"] = time.monotonic() - t0
        victim_firing = firing(prom, target_site=VICTIM)
        site_down = alerts(prom, alertname="SiteDown", target_site=VICTIM)[0]
        assert site_down["labels"]["severity"] == "critical" and "SC-AVL-01" in site_down["labels"]["controls"]

        t1 = time.monotonic()
        start_node(cfg.container(victim.gateway.name))
        times["podman start"] = time.monotonic() - t1
        watch(lambda: "SiteDown" not in firing(prom, target_site=VICTIM), 180, f"SiteDown of {VICTIM} resolving")
        times["SiteDown resolved"] = time.monotonic() - t1
        watch(lambda: not (firing(prom, target_site=VICTIM) & {"SLOErrorBudgetBurnFast"}), 120,
              "fast burn alert resolving")
        times["fast burn resolved"] = time.monotonic() - t1
        restored = restore_gateway(cfg, victim)
        stopped = False
        watch(lambda: not firing(prom), 120, "every alert resolved")
        times["all resolved"] = time.monotonic() - t1
    finally:
        if stopped:
            restore_gateway(cfg, victim)
        for p in reversed(procs):
            stop(p)
        for site in cfg.sites:
            open_station_ports(cfg, site, False)
        # Others' tests run next: the whole lab must be healthy again, not just the gateway.
        wait_until(lambda: all(r["healthy"] for r in api.status(cfg)), 180, "lab healthy after the fault")
    print(f"\nbaseline pending (not firing): {pending}; fired for {VICTIM}: {sorted(victim_firing)}")
    print(", ".join(f"{k} {v:.1f}s" for k, v in times.items()), f"; gateway after restart: {restored}")
    assert seen_other == [], f"alerts for {OTHER}, which never failed: {sorted(set(seen_other))}"
    assert {"SiteDown", "SLOErrorBudgetBurnFast"} <= victim_firing
    # Within the rules' windows: stop grace + SiteDown `for:` / the fast alert's short window + detection.
    assert times["SiteDown fired"] <= STOP_GRACE + SITE_DOWN_FOR + DETECT, times
    assert times["fast burn fired"] <= STOP_GRACE + FAST_SHORT_WINDOW + DETECT, times
    # Restarted with what the stack installed, the gateway needed nothing else: the restart is the fix.
    assert restored == {"systemd": "running"}, restored
    assert all(p.poll() is not None for p in procs)
