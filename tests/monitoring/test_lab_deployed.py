"""The monitoring `pulumi up` deployed on the default lab (infra/site_monitoring.py, playbooks/monitoring.yml), tried
as an operator would: with the stack's operator identity against each site's Prometheus and Alertmanager.

- Each site's Prometheus has every target up: every node's exporter, the station's prober and certificate
  exporters, the gateway's transport exporter, Prometheus and Alertmanager themselves.
- Every monitoring endpoint refuses a client without a monitoring-CA certificate (the same request with one
  is the positive control).
- The sites' Alertmanagers form one cluster.
- Stopping dc-almaty's gateway fires SiteDown{dc-almaty} (and the fast burn alert) at dc-astana's Alertmanager
  with the committed, unscaled rules (SiteDown `for: 2m`); starting it again resolves SiteDown. dc-astana, which
  never failed, gets no alert at either Alertmanager. A backup the outage made fail on dc-almaty's station is
  retried by itself once the site is back, and the whole lab is healthy again.
"""

from __future__ import annotations

import ssl
import time

import httpx
import pytest

from lab import api, cluster, inventory
from lab.nodes import ssh, start_node, wait_booted, wait_ssh
from lab.podman import podman
from monitoring import rulegen
from tests.monitoring.prom import wait_until

pytestmark = pytest.mark.lab
VICTIM, OTHER = "dc-almaty", "dc-astana"


@pytest.fixture(scope="module")
def monitoring(lab_deployment, lab_outputs, tmp_path_factory):
    """Per site its endpoints, and an httpx client with the stack's operator identity."""
    out = lab_outputs["monitoring"]
    d = tmp_path_factory.mktemp("operator")
    (d / "ca.pem").write_text(out["ca_pem"])
    (d / "operator.pem").write_text(out["operator"]["cert_pem"])
    (d / "operator.key").write_text(out["operator"]["key_pem"])
    context = ssl.create_default_context(cafile=str(d / "ca.pem"))
    context.load_cert_chain(d / "operator.pem", d / "operator.key")
    with httpx.Client(verify=context, timeout=10) as client:
        yield out["endpoints"], client, d


def targets(client: httpx.Client, prometheus: str) -> list[dict]:
    return client.get(f"{prometheus}/api/v1/targets").raise_for_status().json()["data"]["activeTargets"]


def am_alerts(client: httpx.Client, alertmanager: str) -> list[dict]:
    """Active (not silenced, not inhibited filtered out: all) alerts an Alertmanager holds."""
    return client.get(f"{alertmanager}/api/v2/alerts").raise_for_status().json()


@pytest.mark.control("SC-MON-01", "SC-CRY-01")
@pytest.mark.timeout(300)
def test_every_target_of_each_site_is_up_behind_mutual_tls_and_the_alertmanagers_are_one_cluster(
        lab_deployment, monitoring):
    endpoints, client, identity = monitoring
    cfg = lab_deployment["config"]
    for site in cfg.sites:
        prom = endpoints[site.name]["prometheus"]
        # Every node's exporter, the station's and the gateway's project exporters, Prometheus, Alertmanager.
        expected = ({("node", n.name) for n in site.nodes} | {(f"sovcloud-{k}", None) for k in rulegen.EXPORTERS}
                    | {("prometheus", None), ("alertmanager", None)})
        state: dict = {}

        def all_up(prom=prom, expected=expected, state=state):
            ts = targets(client, prom)
            state["targets"] = {(t["labels"]["job"], t["labels"].get("node")): t["health"] for t in ts}
            return set(state["targets"]) == expected and all(t["health"] == "up" for t in ts) and ts

        try:
            ts = wait_until(all_up, 120, f"every target of {site.name}'s Prometheus up")
        except AssertionError as err:
            raise AssertionError(f"{err}: {state.get('targets')}, expected {sorted(expected, key=str)}") from None
        assert all(t["scrapeUrl"].startswith("https://") for t in ts)
        assert {t["labels"]["site"] for t in ts} == {site.name}
        # The prober at this site reads every other site's API, gateway and S3 as up.
        up = client.get(f"{prom}/api/v1/query", params={"query": "sovcloud_probe_up"}).json()["data"]["result"]
        assert {(r["metric"]["target_site"], r["metric"]["service"], r["value"][1]) for r in up} == {
            (o.name, s, "1") for o in cfg.sites if o is not site for s in ("api", "gateway", "s3")}

    # Mutual TLS: the same request without the operator's certificate is refused by every kind of endpoint that
    # leaves a node (the station's own exporters are scraped over loopback: its firewall admits no one else).
    station = endpoints[OTHER]["prometheus"].rsplit(":", 1)[0].removeprefix("https://")
    gw = cfg.site(OTHER).ip(cfg.site(OTHER).gateway)
    anonymous = ssl.create_default_context(cafile=str(identity / "ca.pem"))
    for url in (f"{endpoints[OTHER]['prometheus']}/api/v1/targets", f"{endpoints[OTHER]['alertmanager']}/api/v2/status",
                f"https://{station}:{rulegen.NODE_EXPORTER_PORT}/metrics",
                f"https://{gw}:{rulegen.EXPORTER_PORTS['transport']}/metrics"):
        assert client.get(url).status_code == 200, url
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(url, verify=anonymous, timeout=10)

    # One Alertmanager cluster over the sites: each sees every station as a ready peer.
    for site in cfg.sites:
        status = client.get(f"{endpoints[site.name]['alertmanager']}/api/v2/status").json()["cluster"]
        assert status["status"] == "ready" and len(status["peers"]) == len(cfg.sites), status


@pytest.mark.control("SC-MON-01", "SC-AVL-01")
@pytest.mark.timeout(900)
def test_stopping_a_sites_gateway_fires_site_down_at_the_surviving_sites_alertmanager_and_restarting_resolves(
        lab_deployment, monitoring):
    endpoints, client, _ = monitoring
    cfg = lab_deployment["config"]
    victim = cfg.site(VICTIM)
    surviving_am = endpoints[OTHER]["alertmanager"]
    gateway = cfg.container(victim.gateway.name)
    station_ip = victim.ip(next(n for n in victim.nodes if n.name == endpoints[VICTIM]["station"]))

    def state(unit: str) -> str:
        """`<ActiveState> <SubState> <Result>` of a unit on the victim's station."""
        shown = dict(line.split("=", 1) for line in ssh(
            station_ip, f"systemctl show -p ActiveState -p SubState -p Result {unit}").stdout.split())
        return f"{shown['ActiveState']} {shown['SubState']} {shown['Result']}"
    seen_other: list[str] = []

    def active(alertname: str, **labels: str) -> bool:
        alerts = am_alerts(client, surviving_am)
        seen_other.extend(a["labels"]["alertname"] for a in alerts if a["labels"].get("target_site") == OTHER)
        return any(a["labels"]["alertname"] == alertname and a["status"]["state"] == "active"
                   and all(a["labels"].get(k) == v for k, v in labels.items()) for a in alerts)

    assert not active("SiteDown"), "SiteDown already active on the healthy lab"
    times = {}
    t0 = time.monotonic()
    stopped = True
    try:
        podman("stop", "-t", "2", gateway, timeout=60)
        # SiteDown's `for: 2m` after the first failed probe round (15 s) and rule evaluation (15 s).
        wait_until(lambda: active("SiteDown", target_site=VICTIM), 240, f"SiteDown{{{VICTIM}}} at {OTHER}")
        times["SiteDown at the surviving Alertmanager"] = time.monotonic() - t0
        alert = next(a for a in am_alerts(client, surviving_am) if a["labels"]["alertname"] == "SiteDown")
        assert alert["labels"]["severity"] == "critical" and "SC-AVL-01" in alert["labels"]["controls"]
        assert alert["labels"]["monitoring_site"] == OTHER  # raised by the surviving site's own Prometheus
        # The victim's burning error budget fires too, inhibited by SiteDown: one page per site outage.
        burns = wait_until(lambda: [a for a in am_alerts(client, surviving_am)
                                    if a["labels"]["alertname"] == "SLOErrorBudgetBurnFast"
                                    and a["labels"].get("target_site") == VICTIM], 60, "fast burn alert")
        assert all(a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in burns), burns
        # The victim's station backs its tenants up now, as its timer may: the site's API is gone, so the run
        # fails. It is retried by itself once the site is back (the lab is healthy at the end, below).
        job = "sovcloud-dr-tenants.service"
        ssh(station_ip, f"sudo systemctl start {job}", timeout=120)
        assert "cannot list the tenants' backup schedules" in ssh(
            station_ip, f"sudo journalctl -u {job} -n 5 --no-pager").stdout
        assert state(job) == "activating auto-restart exit-code"  # failed, and waiting to run again
        t1 = time.monotonic()
        start_node(gateway)
        wait_until(lambda: not active("SiteDown", target_site=VICTIM), 240, f"SiteDown{{{VICTIM}}} resolving")
        times["resolved after restart"] = time.monotonic() - t1
        ip = victim.ip(victim.gateway)
        wait_ssh(ip, deadline_s=90)
        assert wait_booted(ip, deadline_s=90) == "running"
        stopped = False
    finally:
        if stopped:
            start_node(gateway)
        cluster.wait_ready(victim, inventory.state_dir(cfg), deadline_s=180)
        api.wait_healthy(cfg, deadline_s=180)
    wait_until(lambda: state(job) == "inactive dead success", 150, f"{job} retried and done")
    print("\n" + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))
    assert seen_other == [], f"alerts for {OTHER}, which never failed: {sorted(set(seen_other))}"
    # Once the gateway is back the Alertmanagers gossip again: the resolved state reaches dc-almaty's too.
    wait_until(lambda: not any(a["labels"]["alertname"] == "SiteDown"
                               for a in am_alerts(client, endpoints[VICTIM]["alertmanager"])),
               240, f"SiteDown resolved at {VICTIM}'s Alertmanager too")
