"""The stack's monitoring (infra/site_monitoring.py): each site's station, its Prometheus targets, the other sites it
probes and alerts through, and every endpoint behind the monitoring CA's mutual TLS."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra import config as cfg
from infra.program import build, s3_credential_files
from monitoring import rulegen
from tests.infra.conftest import lab_data
from tests.infra.test_components import _hosts


def test_the_station_is_a_named_node_and_never_the_gateway():
    data = lab_data()
    site = data["sites"][0]
    assert cfg.parse(data).sites[0].monitoring.name == site["monitoring_node"]
    site.pop("monitoring_node")
    assert cfg.parse(data).sites[0].monitoring.name == "astana-w1"  # default: the first worker
    for bad, message in (("astana-gw", "is the site's gateway"), ("nope", "is not a node of the site")):
        site["monitoring_node"] = bad
        with pytest.raises(cfg.ConfigError) as err:
            cfg.parse(data)
        assert err.value.problems[0][0] == "sites[0].monitoring_node" and message in err.value.problems[0][1]


@pytest.mark.tools
@pulumi.runtime.test
def test_each_site_scrapes_its_nodes_and_alerts_every_sites_alertmanager_over_mutual_tls(lab_cloud, checks,
                                                                                          tmp_path):
    res = build(lab_cloud, hosts=_hosts(tmp_path))
    step = next(s for s in res["hosts"]["dc-astana"].steps if s._name == "dc-astana-monitoring")

    @checks.on(step.extra_vars, step.files, step.playbook)
    def _(variables, files, playbook):
        assert playbook.endswith("playbooks/monitoring.yml")
        prom = variables["monitoring_prometheus_config"]
        jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
        # Every node of the site, the station's exporters and the gateway's, Prometheus and Alertmanager.
        assert {t["labels"]["node"] for t in jobs["node"]["static_configs"]} == {
            n.name for n in lab_cloud.site("dc-astana").nodes}
        assert jobs["sovcloud-prober"]["static_configs"][0]["targets"] == ["10.210.1.14:9470"]
        assert jobs["sovcloud-transport"]["static_configs"][0]["targets"] == ["10.210.1.15:9474"]
        assert all(j["scheme"] == "https" and j["tls_config"]["cert_file"].endswith("node.crt") for j in jobs.values())
        # Both sites' Alertmanagers (one cluster), the peers the other site's.
        assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
            "10.210.1.14:9093", "10.210.2.14:9093"]
        assert variables["monitoring_alertmanager_peers"] == ["10.210.2.14:9094"]
        assert variables["monitoring_ports"]["exporters"] == rulegen.EXPORTER_PORTS
        # The prober probes the OTHER site's API (with that cluster's identity), gateway and S3.
        prober = variables["monitoring_exporters"]["prober"]
        assert {(t["site"], t["service"]) for t in prober["targets"]} == {
            ("dc-almaty", s) for s in ("api", "gateway", "s3")}
        assert prober["local_check_url"] == "http://10.210.1.15:8081/healthz"
        assert [p["site"] for p in variables["monitoring_gateway_exporters"]["transport"]["peers"]] == ["dc-almaty"]
        # Identities of this site's nodes only, and the prober's for the other cluster.
        assert {f.rsplit("/", 1)[1] for f in files} == {
            "ca.crt", *(f"{n.name}.{e}" for n in lab_cloud.site("dc-astana").nodes for e in ("crt", "key")),
            "prober-almaty.crt", "prober-almaty.key", "api-ca-almaty.crt"}


def _with_s3(tmp_path, lab_cloud, make_files: bool = True) -> cfg.Hosts:
    tmp_path.mkdir(exist_ok=True)
    hosts = _hosts(tmp_path)
    root = tmp_path / "s3"
    for site in lab_cloud.sites:
        for identity in ("backup", "monitor", "admin"):
            if make_files:
                (root / site.name).mkdir(parents=True, exist_ok=True)
                (root / site.name / f"{identity}.json").write_text(
                    json.dumps({"access_key": f"{site.name}-{identity}", "secret_key": "s"}))
    return hosts.model_copy(update={"s3_credentials_dir": str(root)})


def test_missing_s3_keys_are_refused_before_anything_runs(lab_cloud, tmp_path):
    hosts = _with_s3(tmp_path, lab_cloud, make_files=False)
    with pytest.raises(cfg.ConfigError) as err:
        s3_credential_files(lab_cloud, hosts)
    ((field, message),) = err.value.problems
    assert field == "sovcloud:hosts.s3_credentials_dir" and "dc-astana/backup.json" in message
    assert set(s3_credential_files(lab_cloud, _with_s3(tmp_path / "with", lab_cloud))) == {"dc-astana", "dc-almaty"}


@pytest.mark.tools
@pulumi.runtime.test
def test_each_station_runs_the_dr_jobs_with_the_stacks_keys_and_its_exporters_read_with_the_monitor_keys(
        lab_cloud, checks, tmp_path):
    res = build(lab_cloud, hosts=_with_s3(tmp_path, lab_cloud))
    steps = {s._name: s for s in res["hosts"]["dc-almaty"].steps}
    step, hardening = steps["dc-almaty-monitoring"], steps["dc-almaty-hardening"]

    @checks.on(step.extra_vars, step.files, hardening.extra_vars)
    def _(variables, files, harden_vars):
        dr = variables["dr_station_config"]
        assert dr["primary"] == "dc-almaty"  # the station's own site is the origin of its backups
        assert [s["endpoint"] for s in dr["sites"]] == ["http://10.210.1.5:8333", "http://10.210.2.5:8333"]
        jobs = variables["dr_station_jobs"]
        assert set(jobs) == {"etcd-snapshot", "tenants", "drill", "sync", "prune"}
        assert jobs["etcd-snapshot"]["args"][:4] == ["backup", "etcd", "--endpoint", "https://10.210.2.10:2379"]
        assert jobs["tenants"]["args"][0] == "scheduled"
        # The writer's and the admin's keys of every site, the stack's keys; the verify key apart (public).
        assert {f.rsplit("/", 1)[1] for f in files if "/dr/" in f} == {
            "kek", "signing.key", "etcd-ca.crt", "etcd-client.crt", "etcd-client.key", "kubeconfig",
            *(f"s3-{s}-{i}.json" for s in ("dc-astana", "dc-almaty") for i in ("backup", "admin"))}
        assert "dc-almaty/dr-public/verify.key" in files
        assert not any(f.endswith("-monitor.json") for f in files)  # the monitor keys: the exporters' environment
        env = variables["monitoring_exporters_env"]["backup"]
        assert env == {"S3_0_ACCESS_KEY": "dc-astana-monitor", "S3_0_SECRET_KEY": "s",
                       "S3_1_ACCESS_KEY": "dc-almaty-monitor", "S3_1_SECRET_KEY": "s"}
        assert {"backup", "drills"} <= set(variables["monitoring_exporters"])
        # etcd admits the station as a client (its snapshots), besides what the stack's extra_vars name.
        assert harden_vars["hardening_firewall_etcd_client_cidrs"][-1] == "10.210.2.14/32"

    objects = res["rbac"]["almaty"]

    @checks.on(*(o.manifest for o in objects))
    def _(*manifests):
        binding = next(m for m in manifests if m["kind"] == "ClusterRoleBinding"
                       and m["metadata"]["name"] == "sovcloud:backup")
        assert binding["subjects"][0]["name"] == "sovcloud:backup"
