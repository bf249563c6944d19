"""The restore drill on the lab: the dc-astana cluster's real etcd and the egov tenant namespaces of both
clusters, backed up to both sites' real S3 (the DR config the deployment wrote), restored into a fresh etcd
and fresh namespaces, verified, and read back by the restore-drill exporter."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dr import k8s, s3io
from dr.config import load_config
from lab import cluster, inventory
from lab.s3 import credentials_file, read_credentials
from monitoring.exporters.config import DrillConfig, S3Store
from monitoring.exporters.drills import DrillExporter

pytestmark = [pytest.mark.lab, pytest.mark.tools]
REPO = Path(__file__).resolve().parents[2]
TENANT_LABEL = "sovcloud.kz/agency"  # set on every tenant namespace by charts/tenant


@pytest.fixture(scope="module")
def lab(lab_deployment):
    cfg = lab_deployment["config"]
    conf = inventory.state_dir(cfg) / "dr" / "dr.json"
    assert conf.is_file(), f"{conf} missing: the deployment (lab.deploy) writes it"
    return {"lab": cfg, "dr_conf": conf, "dr": load_config(conf)}


def dr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dr", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)


def etcd_tls(lab_cfg, site) -> list[str]:
    p = cluster.site_dir(site, inventory.state_dir(lab_cfg)) / "pki"
    return [f"--cacert={p}/etcd-ca.crt", f"--cert={p}/apiserver-etcd-client.crt",
            f"--key={p}/apiserver-etcd-client.key"]


def kubeconfig(lab_cfg, site) -> str:
    return str(cluster.site_dir(site, inventory.state_dir(lab_cfg)) / "kubeconfig" / "admin.conf")


def tenant_namespaces(kc: str) -> list[str]:
    api = k8s.api_client(kc)
    items = k8s.call(api, "/api/v1/namespaces", query=[("labelSelector", TENANT_LABEL)])["items"]
    return sorted(i["metadata"]["name"] for i in items if "drill" not in i["metadata"]["name"])


def exported(lab, site: str, monkeypatch) -> dict:
    """What the restore-drill exporter reports for `site`, reading the lab's S3 stores with each site's
    read-only monitor keys (lab.s3)."""
    stores = []
    for i, s in enumerate(lab["dr"].sites):
        access, secret = read_credentials(credentials_file(lab["lab"], s.name, "monitor"))
        monkeypatch.setenv(f"DR_LAB_S3_{i}_ACCESS", access)
        monkeypatch.setenv(f"DR_LAB_S3_{i}_SECRET", secret)
        stores.append(S3Store(site=s.name, endpoint_url=s.endpoint, access_key_env=f"DR_LAB_S3_{i}_ACCESS",
                              secret_key_env=f"DR_LAB_S3_{i}_SECRET"))
    e = DrillExporter(DrillConfig(stores=stores, sites=[site], timeout_seconds=10))
    # A private loop: asyncio.run() would leave the main thread without a current loop, which Pulumi's
    # mocks in later tests (tests/infra) need.
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(e.refresh_once()) is True
    finally:
        loop.close()
    return {m.name: {s.labels.get("site") or s.labels.get("store_site"): s.value for s in m.samples}
            for m in e.snapshot.families}


def check_result(lab, p: subprocess.CompletedProcess, site: str, dataset: str) -> dict:
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr
    *body, line = p.stdout.strip().splitlines()
    print(line)
    res = json.loads("\n".join(body))
    assert line.startswith(f"drill {site}/{dataset}: PASS RTO=") and "RPO=" in line
    assert res["ok"] is True and res["error"] is None
    assert res["replicated_to"] == ["dc-astana", "dc-almaty"] and res["published"] == {
        "dc-astana": "ok", "dc-almaty": "ok"}
    assert 0 < res["rto_seconds"] < res["rto_target"] and 0 < res["rpo_seconds"] < res["rpo_target"]
    # The same result, read back from both sites' S3 by the exporter monitoring runs.
    for store in lab["dr"].sites:
        doc = json.loads(s3io.get_bytes(s3io.client(store), store.bucket, f"drills/{site}/latest.json"))
        assert (doc["dataset"], doc["finished"], doc["rto_seconds"]) == (dataset, res["finished"], res["rto_seconds"])
    return res


@pytest.mark.control("SC-BCK-02", "SC-BCK-01", "SC-DATA-02")
def test_drill_of_the_real_etcd_of_dc_astana(lab, monkeypatch):
    """Sentinel into the cluster's etcd -> snapshot of a real member -> encrypted to both sites' S3 ->
    restored into a fresh etcd -> sentinel and the tenant namespace's keys are there."""
    site = lab["lab"].site("dc-astana")
    member = cluster.control_plane(site)[0]
    p = dr("--config", str(lab["dr_conf"]), "drill", "--dataset", "etcd", "--site", site.name,
           f"--endpoint=https://{site.ip(member)}:2379", *etcd_tls(lab["lab"], site),
           "--expect-key", "/registry/namespaces/kube-system",
           *[f"--expect-key=/registry/namespaces/{ns}" for ns in tenant_namespaces(kubeconfig(lab["lab"], site))])
    res = check_result(lab, p, site.name, "etcd")
    assert res["details"]["source"] == f"https://{site.ip(member)}:2379"
    assert res["details"]["restored_registry_keys"] > 50  # a real cluster's etcd, not a scratch one
    m = exported(lab, site.name, monkeypatch)
    assert m["sovcloud_restore_drill_success"][site.name] == 1
    assert m["sovcloud_restore_drill_rto_seconds"][site.name] == res["rto_seconds"]
    assert m["sovcloud_restore_drill_rpo_seconds"][site.name] == res["rpo_seconds"]


@pytest.mark.control("SC-BCK-02", "SC-BCK-01")
@pytest.mark.parametrize("site_name", ["dc-astana", "dc-almaty"])
def test_drill_of_tenant_namespaces(lab, site_name, monkeypatch):
    """Every egov tenant namespace of each cluster: sentinel ConfigMap -> export -> both S3 sites ->
    restored into a fresh namespace of the same cluster through its API LB -> every object verified."""
    site = lab["lab"].site(site_name)
    kc = kubeconfig(lab["lab"], site)
    namespaces = tenant_namespaces(kc)
    assert namespaces, f"no namespace labelled {TENANT_LABEL} on {site_name}: the deployment makes egov's"
    for ns in namespaces:
        p = dr("--config", str(lab["dr_conf"]), "drill", "--namespace", ns, "--kubeconfig", kc, "--site", site_name)
        res = check_result(lab, p, site_name, f"k8s-{ns}")
        d = res["details"]
        assert d["target_namespace"].startswith(f"{ns}-drill-") and d["sentinel"]
        assert d["objects"] >= 10  # quota, limits, RBAC, network policies, config of the tenant chart
        m = exported(lab, site_name, monkeypatch)
        assert m["sovcloud_restore_drill_success"][site_name] == 1
        assert m["sovcloud_restore_drill_rto_seconds"][site_name] == res["rto_seconds"]
    api = k8s.api_client(kc)  # the drill namespaces are gone (or going) again
    left = [i["metadata"] for i in k8s.call(api, "/api/v1/namespaces")["items"] if "-drill-" in i["metadata"]["name"]]
    assert all(m.get("deletionTimestamp") for m in left), left
