"""Prometheus rules, scrape config and Alertmanager config of sovcloud, generated from one place.

The committed files under monitoring/prometheus/ are this module's output (`python -m monitoring.rulegen
--write`); a test fails when they drift. `scale` shrinks every window and `for:` of the availability
rules by the same factor so the integration test runs a test-sized instance of the SAME rules.

SLO burn-rate alerts follow the Google SRE workbook (ch. 5, "multiwindow, multi-burn-rate"):
  objective 99.982% (Tier III)  ->  error budget 0.018% of probes over 30 days
  page  14.4x burn over 1h AND 5m   (2% of the 30-day budget gone in 1 hour)
  page   6x   burn over 6h AND 30m  (5% of the budget gone in 6 hours)
The long window gives significance, the short one makes the alert resolve soon after recovery.
At 14.4x the tolerated error ratio is 0.26%: with 15 s probes from two sites (480 probes/hour) a
single failed probe within the hour is not enough on its own, a couple are — at 99.982% that is the point.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

OBJECTIVE = 0.99982
HERE = Path(__file__).resolve().parent / "prometheus"
RUNBOOK = "monitoring/RUNBOOK.md#"  # one section per alert, anchored by its lower-cased name


@dataclass(frozen=True)
class BurnWindow:
    long_s: int
    short_s: int
    factor: float
    severity: str


BURN_WINDOWS = (BurnWindow(3600, 300, 14.4, "critical"), BurnWindow(6 * 3600, 1800, 6.0, "critical"))
ERROR_WINDOWS = sorted({w for b in BURN_WINDOWS for w in (b.long_s, b.short_s)})


_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}  # the Prometheus duration units dur() writes, largest first


def dur(seconds: float) -> str:
    """Seconds -> the shortest exact Prometheus duration ('1h', '30m', '6s')."""
    s = max(1, round(seconds))
    return next(f"{s // n}{unit}" for unit, n in _UNITS.items() if s % n == 0)


def duration_seconds(duration: str) -> int:
    """A duration as dur() writes it ('2m', '6s') -> seconds."""
    return int(duration[:-1]) * _UNITS[duration[-1]]


def nominal(seconds: int) -> str:
    # Record names carry the NOMINAL window so a scaled instance has the same rule names.
    return dur(seconds)


def alert(name: str, expr: str, severity: str, controls: list[str], summary: str, description: str,
          for_: str | None = None) -> dict:
    rule: dict = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity, "controls": ",".join(controls)}
    rule["annotations"] = {"summary": summary, "description": description, "runbook": RUNBOOK + name.lower()}
    return rule


def slo_rules(scale: float = 1.0, objective: float = OBJECTIVE) -> dict:
    budget = 1 - objective
    records = []
    for w in ERROR_WINDOWS:
        rng = dur(w / scale)
        records.append({
            "record": f"sovcloud:probe_error_ratio:rate{nominal(w)}",
            "expr": f"sum by (target_site, service) (rate(sovcloud_probe_failures_total[{rng}]))\n"
                    f"/\nsum by (target_site, service) (rate(sovcloud_probe_total[{rng}]))",
        })
    # No `for:` on the burn alerts: the short window is what keeps noise from paging (SRE workbook), and a
    # `for:` would only delay the page and its resolution.
    burn = []
    for b, name in zip(BURN_WINDOWS, ("SLOErrorBudgetBurnFast", "SLOErrorBudgetBurnSlow"), strict=True):
        threshold = round(b.factor * budget, 8)
        burn.append(alert(
            name,
            f"sovcloud:probe_error_ratio:rate{nominal(b.long_s)} > {threshold}\n"
            f"and\nsovcloud:probe_error_ratio:rate{nominal(b.short_s)} > {threshold}",
            b.severity, ["SC-AVL-01", "SC-MON-01"],
            f"{{{{ $labels.service }}}} of {{{{ $labels.target_site }}}} burns the {objective:.3%} "
            f"error budget {b.factor}x too fast",
            f"Probe error ratio over {nominal(b.long_s)} and {nominal(b.short_s)} is above {threshold} "
            f"({b.factor}x the budget of {budget:.5f}); now {{{{ $value | humanizePercentage }}}}. "
            f"At this rate the 30-day budget is gone in {30 / b.factor:.1f} days.",
        ))
    site_down = alert(
        "SiteDown",
        "max by (target_site) (sovcloud_probe_up) == 0",
        "critical", ["SC-AVL-01", "SC-MON-01"],
        "Site {{ $labels.target_site }} is unreachable from every other site",
        "Every probe of every service (API, gateway, S3) of {{ $labels.target_site }} from every other site "
        "fails. Fail over per the DR plan if it persists.",
        for_=dur(120 / scale))
    return {"groups": [
        {"name": "sovcloud-slo-records", "rules": records},
        {"name": "sovcloud-availability", "rules": [*burn, site_down]},
    ]}


def backup_rules() -> dict:
    offsite = 'sovcloud_backup_last_success_timestamp_seconds{offsite="true"}'
    return {"groups": [{"name": "sovcloud-backup", "rules": [
        alert("BackupTooOld",
              f"min by (site, dataset) (time() - {offsite})\n"
              "> on (site, dataset) max by (site, dataset) (sovcloud_backup_rpo_seconds)\n"
              "or on (site, dataset)\n"
              "max by (site, dataset) (sovcloud_backup_rpo_seconds)\n"
              f"unless on (site, dataset) {offsite}",
              "critical", ["SC-BCK-01", "SC-DATA-01"],
              "No good off-site backup of {{ $labels.dataset }} ({{ $labels.site }}) within its RPO",
              "The newest verified backup of {{ $labels.dataset }} from {{ $labels.site }} held at another "
              "site is older than the RPO target, or no other site holds one. Run `python -m dr backup` / "
              "`python -m dr sync` and check the backup job logs.",
              for_="15m"),
        alert("BackupInvalidManifests",
              "max by (site, dataset, store_site) (sovcloud_backup_bad_manifests) > 0",
              "warning", ["SC-BCK-01"],
              "Invalid backups of {{ $labels.dataset }} ({{ $labels.site }}) at {{ $labels.store_site }}",
              "{{ $value }} backups newer than the last good one fail validation (unsigned, tampered or "
              "incomplete). Re-run `python -m dr sync` and investigate the copies.",
              for_="30m"),
    ]}]}


def drill_rules() -> dict:
    # RestoreDrillFailed has no `for:`: a drill's result is one fact, not a noisy sample, and it stands until the
    # next drill; a `for:` would only delay the page.
    return {"groups": [{"name": "sovcloud-restore-drills", "rules": [
        alert("RestoreDrillFailed",
              "max by (site) (\n  sovcloud_restore_drill_success == 0\n"
              "  or sovcloud_restore_drill_rto_seconds > sovcloud_restore_drill_rto_target_seconds\n"
              "  or sovcloud_restore_drill_rpo_seconds > sovcloud_restore_drill_rpo_target_seconds\n"
              "  or sovcloud_restore_drill_invalid == 1\n)",
              "critical", ["SC-BCK-02"],
              "The last restore drill of {{ $labels.site }} failed or missed its RTO/RPO",
              "drills/{{ $labels.site }}/latest.json reports ok=false, an RTO or RPO above target, or is "
              "unreadable. Read its `error` field and re-run the drill after fixing the cause."),
        alert("RestoreDrillTooOld",
              "time() - sovcloud_restore_drill_last_timestamp_seconds\n"
              "> sovcloud_restore_drill_max_age_seconds",
              "warning", ["SC-BCK-02"],
              "No recent restore drill for {{ $labels.site }}",
              "The last restore drill of {{ $labels.site }} finished longer ago than the allowed drill "
              "interval (or never ran). Schedule `python -m dr drill`.",
              for_="1h"),
    ]}]}


def cert_rules(warn_days: int = 21) -> dict:
    # No `for:`: a certificate's expiry does not flap, and one handshake that negotiated an old TLS version
    # is the proof (the exporter reports what it saw, never a timeout, as a version).
    return {"groups": [{"name": "sovcloud-certificates", "rules": [
        alert("CertificateExpiringSoon",
              f"sovcloud_cert_not_after_timestamp_seconds - time() < {warn_days} * 86400",
              "warning", ["SC-CRY-02"],
              "Certificate {{ $labels.subject }} expires soon",
              "{{ $labels.subject }} (issuer {{ $labels.issuer }}, from {{ $labels.source }}) expires in "
              f"{{{{ $value | humanizeDuration }}}} (threshold {warn_days} days). "
              "Re-issue it from the project PKI."),
        alert("TLSVersionTooLow",
              'sovcloud_tls_version_info{version!~"TLSv1.2|TLSv1.3"} == 1',
              "critical", ["SC-CRY-01"],
              "{{ $labels.source }} negotiates {{ $labels.version }}",
              "Every endpoint must negotiate TLS 1.2 or newer; {{ $labels.source }} accepted "
              "{{ $labels.version }}. Fix its TLS configuration."),
    ]}]}


def transport_rules(scale: float = 1.0) -> dict:
    return {"groups": [{"name": "sovcloud-transport", "rules": [
        alert("TransportTunnelDown",
              "sovcloud_transport_tunnel_up == 0",
              "critical", ["SC-NET-02", "SC-AVL-01"],
              "Encrypted tunnel to {{ $labels.peer_site }} is down",
              "WireGuard peer {{ $labels.peer }} ({{ $labels.peer_site }}) on {{ $labels.instance }} has had "
              "no handshake within the timeout. Inter-site traffic must not fall back to plaintext: check "
              "the peer's endpoint and keys.",
              for_=dur(300 / scale)),
    ]}]}


def etcd_rules() -> dict:
    sel = '{job=~".*etcd.*"}'
    return {"groups": [{"name": "sovcloud-etcd", "rules": [
        alert("EtcdMemberLoss",
              f"count by (job, site) (up{sel})\n- (\n"
              f"  count by (job, site) (etcd_server_has_leader{sel} == 1)\n"
              f"  or count by (job, site) (up{sel}) * 0\n) > 0",
              "critical", ["SC-AVL-02"],
              "{{ $value }} etcd member(s) of {{ $labels.site }} lost",
              "Members of the etcd cluster of {{ $labels.site }} are down or have no leader. The control "
              "plane survives one loss but no second: restore the member now.",
              for_="1m"),
        alert("EtcdNoLeader",
              f"etcd_server_has_leader{sel} == 0",
              "critical", ["SC-AVL-02"],
              "etcd member {{ $labels.instance }} of {{ $labels.site }} has no leader",
              "The member sees no leader: the cluster may have lost quorum. Kubernetes writes fail.",
              for_="1m"),
    ]}]}


def exporter_rules() -> dict:
    return {"groups": [{"name": "sovcloud-monitoring", "rules": [
        alert("ExporterDown",
              'up{job=~"sovcloud-.*"} == 0',
              "warning", ["SC-MON-01"],
              "Exporter {{ $labels.job }} at {{ $labels.instance }} is not scraped",
              "While an exporter is down the alerts that depend on it cannot fire. Restart it.",
              for_="5m"),
        alert("ExporterRefreshFailing",
              "sovcloud_exporter_refresh_success == 0",
              "warning", ["SC-MON-01"],
              "Exporter {{ $labels.exporter }} at {{ $labels.instance }} fails to refresh",
              "Its metrics are incomplete (a store, endpoint or command it reads is failing); see its log.",
              for_="10m"),
    ]}]}


def coverage_rules() -> dict:
    # The watch itself must not go blind in silence: a node whose exporter is not scraped, a certificate source
    # or endpoint the certs exporter cannot read and a rule group that fails to evaluate are each unmonitored.
    return {"groups": [{"name": "sovcloud-coverage", "rules": [
        alert("NodeNotMonitored",
              'up{job="node"} == 0',
              "warning", ["SC-MON-02"],
              "Node {{ $labels.node }} of {{ $labels.site }} is not monitored",
              "Prometheus of {{ $labels.site }} cannot scrape the node exporter at {{ $labels.instance }}: "
              "nothing on that node is watched. Check prometheus-node-exporter and the host firewall.",
              for_="5m"),
        alert("CertificateSourceUnreadable",
              "sovcloud_cert_source_ok == 0",
              "warning", ["SC-MON-02"],
              "The certificate watch cannot read {{ $labels.source }}",
              "The certs exporter at {{ $labels.instance }} cannot read {{ $labels.source }} (a PEM path or a "
              "TLS endpoint: the API or a published service behind the gateway), so its certificate and TLS "
              "version go unwatched. Check that the endpoint answers TLS or the file exists.",
              for_="15m"),
        alert("PrometheusRuleEvaluationFailing",
              "sum by (site, rule_group) (increase(prometheus_rule_evaluation_failures_total[10m])) > 0",
              "warning", ["SC-MON-02"],
              "Rules of {{ $labels.rule_group }} fail to evaluate at {{ $labels.site }}",
              "Evaluations of {{ $labels.rule_group }} keep failing: its alerts cannot fire. Read the "
              "Prometheus log of {{ $labels.site }} for the failing expression.",
              for_="10m"),
    ]}]}


def alerting_rules() -> dict:
    # Each site's Prometheus sends to the Alertmanagers of every site, which gossip as one cluster
    # (infra/site_monitoring.py): an alert is delivered while any one site's Alertmanager is up. These rules
    # watch that standby: a cluster with fewer members than Alertmanagers configured, a delivery path that
    # fails, and a Prometheus with a single Alertmanager (no second site to take over).
    prom, am = '{job="prometheus"}', '{job="alertmanager"}'
    return {"groups": [{"name": "sovcloud-alerting", "rules": [
        alert("AlertmanagerClusterDegraded",
              f"max by (site) (alertmanager_cluster_members{am})\n"
              f"< on (site)\nmax by (site) (prometheus_notifications_alertmanagers_discovered{prom})",
              "critical", ["SC-MON-03"],
              "Alertmanager of {{ $labels.site }} sees {{ $value }} cluster member(s), fewer than configured",
              "Its cluster has fewer members than the Alertmanagers the Prometheus of {{ $labels.site }} sends "
              "to: a site's Alertmanager is down or cut off from the gossip, and alerts now depend on fewer "
              "sites. Check the Alertmanager of every site and the cluster port between the stations.",
              for_="10m"),
        alert("AlertDeliveryFailing",
              f"sum by (site, alertmanager) (rate(prometheus_notifications_errors_total{prom}[5m])) > 0",
              "warning", ["SC-MON-03"],
              "Prometheus of {{ $labels.site }} fails to deliver alerts to {{ $labels.alertmanager }}",
              "Sending alerts from {{ $labels.site }} to {{ $labels.alertmanager }} fails; the other "
              "Alertmanagers still receive them. Check that Alertmanager, its TLS identity and the path to it.",
              for_="15m"),
        alert("AlertingWithoutStandby",
              f"max by (site) (prometheus_notifications_alertmanagers_discovered{prom}) < 2",
              "critical", ["SC-MON-03"],
              "Prometheus of {{ $labels.site }} sends alerts to {{ $value }} Alertmanager(s)",
              "With fewer than two Alertmanagers the loss of one site silences every alert of "
              "{{ $labels.site }}. Give the stack a monitoring station at a second site.",
              for_="10m"),
    ]}]}


def link_rules(p95_seconds: float = 1.0) -> dict:
    # A probe crosses the transport network to another site's API, gateway or S3: its 95th percentile over
    # 15 minutes is the latency that site's users of those services see from here.
    p95 = ("histogram_quantile(0.95,\n  sum by (source_site, target_site, service, le) "
           "(rate(sovcloud_probe_duration_seconds_bucket[15m]))\n)")
    return {"groups": [{"name": "sovcloud-links", "rules": [
        alert("InterSiteLatencyHigh",
              f"{p95} > {p95_seconds:g}",
              "warning", ["SC-AVL-04"],
              "{{ $labels.service }} of {{ $labels.target_site }} answers {{ $labels.source_site }} slowly",
              f"95% of the probes over 15m took up to {{{{ $value | humanizeDuration }}}} (threshold "
              f"{p95_seconds:g}s). Slow links make services fail before they go down: check the tunnel "
              "between the sites (sovcloud_transport_*) and the target's load.",
              for_="15m"),
        # Raised by the cut-off site's own Prometheus to its own Alertmanager: the other sites see SiteDown.
        alert("LocalGatewayUnhealthy",
              "sovcloud_prober_local_up == 0",
              "critical", ["SC-AVL-05"],
              "The gateway of {{ $labels.source_site }} fails its health check from inside the site",
              "The monitoring station of {{ $labels.source_site }} cannot get the health page of its own "
              "gateway, the site's only path to the Internet and the other sites; its prober skips every round "
              "meanwhile. Check the gateway node, nginx and the health port.",
              for_="5m"),
    ]}]}


def rule_files(scale: float = 1.0) -> dict[str, dict]:
    return {
        "slo.yml": slo_rules(scale), "backup.yml": backup_rules(), "drills.yml": drill_rules(),
        "certs.yml": cert_rules(), "transport.yml": transport_rules(scale), "etcd.yml": etcd_rules(),
        "exporters.yml": exporter_rules(), "coverage.yml": coverage_rules(), "alerting.yml": alerting_rules(),
        "links.yml": link_rules(),
    }


EXPORTERS = ("prober", "backup", "drills", "certs", "transport")
# Where each project exporter listens (9470 + its index), Prometheus' registry of default ports style.
EXPORTER_PORTS = {kind: 9470 + i for i, kind in enumerate(EXPORTERS)}
NODE_EXPORTER_PORT, PROMETHEUS_PORT, ALERTMANAGER_PORT, ALERTMANAGER_CLUSTER_PORT = 9100, 9090, 9093, 9094


def prometheus_config(sites: list[dict], scrape_interval: str = "15s", evaluation_interval: str = "15s",
                      rule_files: list[str] | None = None, alertmanagers: list[str] | None = None,
                      tls: dict | None = None, external_labels: dict | None = None) -> dict:
    """Scrape config for the site list the lab/infra code holds.

    sites: [{"name": "dc-astana", "exporters": {"prober": "10.0.0.5:9470", ...}, "etcd": ["host:2379", ...],
             "nodes": {"astana-cp1": "10.0.0.10:9100", ...}, "prometheus": "host:9090",
             "alertmanager": "host:9093"}]  (every key but name optional)
    Every target gets a `site` label (node exporters a `node` label too); each exporter kind is one job
    `sovcloud-<kind>`. `tls` (Prometheus' tls_config: ca_file, cert_file, key_file) makes every scrape and
    the alert delivery HTTPS with that client identity.
    """
    jobs: dict[str, list[dict]] = {}
    for s in sites:
        for kind, addr in sorted(s.get("exporters", {}).items()):
            if kind not in EXPORTERS:
                raise ValueError(f"sites[{s['name']}].exporters: unknown exporter {kind!r}; "
                                 f"use one of {EXPORTERS}")
            jobs.setdefault(f"sovcloud-{kind}", []).append({"targets": [addr], "labels": {"site": s["name"]}})
        if s.get("etcd"):
            jobs.setdefault("etcd", []).append({"targets": list(s["etcd"]), "labels": {"site": s["name"]}})
        for node, addr in sorted(s.get("nodes", {}).items()):
            jobs.setdefault("node", []).append({"targets": [addr], "labels": {"site": s["name"], "node": node}})
        for job in ("prometheus", "alertmanager"):
            if s.get(job):
                jobs.setdefault(job, []).append({"targets": [s[job]], "labels": {"site": s["name"]}})
    https = {"scheme": "https", "tls_config": tls} if tls else {}
    cfg: dict = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval,
                   "external_labels": external_labels or {"monitor": "sovcloud"}},
        "rule_files": rule_files if rule_files is not None else ["rules/*.yml"],
        # The project's exporters label their series with the site they describe (a backup's origin, a probe's
        # target): theirs win over the scraped site's (honor_labels), which `up` still carries.
        "scrape_configs": [{"job_name": job, **({"honor_labels": True} if job.startswith("sovcloud-") else {}),
                            **https, "static_configs": tcs} for job, tcs in sorted(jobs.items())],
    }
    if alertmanagers:
        cfg["alerting"] = {"alertmanagers": [{**https, "static_configs": [{"targets": alertmanagers}]}]}
    return cfg


EXAMPLE_SITES = [
    {"name": f"dc-{n}", "exporters": {k: f"monitoring.dc-{n}.sovcloud.internal:{port}"
                                      for k, port in EXPORTER_PORTS.items()},
     "etcd": [f"{n}-cp{i}.dc-{n}.sovcloud.internal:2381" for i in (1, 2, 3)]}
    for n in ("astana", "almaty", "shymkent")
]


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, data: str):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dump(data: dict) -> str:
    return "---\n" + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=96)


def render_all(scale: float = 1.0) -> dict[str, str]:
    """Relative path under monitoring/prometheus/ -> file text."""
    out = {f"rules/{name}": dump(data) for name, data in rule_files(scale).items()}
    out["prometheus.yml"] = dump(prometheus_config(
        EXAMPLE_SITES, alertmanagers=["alertmanager.monitoring.sovcloud.internal:9093"]))
    return out


def write(root: Path, scale: float = 1.0) -> list[Path]:
    written = []
    for rel, text in render_all(scale).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m monitoring.rulegen")
    ap.add_argument("--write", action="store_true", help="rewrite monitoring/prometheus/")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--scale", type=float, default=1.0, help="shrink windows (test instances only)")
    args = ap.parse_args(argv)
    if not args.write:
        for rel, text in render_all(args.scale).items():
            print(f"# {rel}\n{text}")
        return 0
    for p in write(args.out, args.scale):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
