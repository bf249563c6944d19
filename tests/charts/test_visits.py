"""An agency's two-tier application (issue 16): charts/workload/README.md's "An application and its database",
pasted verbatim into a shell on the lab machine. egov, with its own kubeconfig, runs PostgreSQL as a StatefulSet on
the cluster's default storage and a web tier that reaches it by the Service's name; every visit is recorded in the
database, whichever web pod answers, and the data outlives the database's pod. The DR tooling backs the database
up by its dump (the chart's `backup.dump`) as the station's backup identity, and restores the namespace with its
data into a fresh namespace, where the app goes on from the visits the backup holds.

NEEDS THE LAB (`@pytest.mark.lab`): cluster DNS, kube-proxy and storage of dc-astana's cluster and the stack's
tenant egov, all deployed by `pulumi up` of the lab stack.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab import inventory
from lab.nodes import ssh
from tests.docs import verbatim_block

from .conftest import WORKLOAD, eventually, kubectl

pytestmark = [pytest.mark.lab, pytest.mark.tools]

README = WORKLOAD / "README.md"
MARK = "<!-- verbatim: tests/charts/test_visits.py -->"
NS = "egov-prod"
REPO = WORKLOAD.parents[1]


RESTORED = f"{NS}-restored"


def visit(kubeconfig: str, target: str, namespace: str = NS) -> str:
    return kubectl(kubeconfig, "-n", namespace, "exec", target, "--", "wget", "-qO-",
                   "http://127.0.0.1:8080/cgi-bin/visit").stdout.strip()


@pytest.fixture(scope="module")
def visits(lab_deployment):
    kubeconfig = lab_deployment["kubeconfigs"]["dc-astana"]
    block = verbatim_block(README, MARK)
    try:
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
        yield r, kubeconfig
    finally:
        for release in ("visits", "visits-db"):
            subprocess.run(["helm", "uninstall", release, "-n", NS, "--wait", "--ignore-not-found", "--kubeconfig",
                            kubeconfig], capture_output=True, timeout=180)
        kubectl(kubeconfig, "-n", NS, "delete", "pvc/data-visits-db-0", "secret/visits-db", "--ignore-not-found",
                check=False)


def test_the_app_records_visits_in_its_database_by_service_name_and_they_outlive_the_database_pod(visits):
    r, kubeconfig = visits
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[-1] == "1", r.stdout[-1500:]  # the first visit, recorded in the database
    claim = next(line.split() for line in lines if line.startswith("data-visits-db-0"))
    assert claim[1] == "Bound" and "local-path" in claim, claim
    # Each web pod reaches the same database (by the Service name in DB_HOST): the count goes on across pods.
    pods = kubectl(kubeconfig, "-n", NS, "get", "pods", "-l", "app.kubernetes.io/name=visits", "-o",
                   "jsonpath={.items[*].metadata.name}").stdout.split()
    assert len(pods) == 2
    assert [visit(kubeconfig, f"pod/{p}") for p in pods] == ["2", "3"]
    # The database's pod goes; its successor mounts the same volume and has every visit.
    kubectl(kubeconfig, "-n", NS, "delete", "pod", "visits-db-0", "--wait=true", timeout=120)
    kubectl(kubeconfig, "-n", NS, "wait", "--for=condition=Ready", "pod/visits-db-0", "--timeout=120s", timeout=150)
    # Ready is the kubelet's word; each node's kube-proxy programs the Service's new endpoint a moment later (a
    # visit that cannot connect records nothing, so retrying it is safe). Both web pods (spread over the workers)
    # go on counting.
    assert eventually(lambda: visit(kubeconfig, f"pod/{pods[0]}"), "4", seconds=30) == "4"
    assert eventually(lambda: visit(kubeconfig, f"pod/{pods[1]}"), "5", seconds=30) == "5"


@pytest.mark.control("SC-BCK-01", "SC-BCK-02")
@pytest.mark.timeout(900)
def test_the_database_is_backed_up_by_its_dump_and_restored_with_its_data_into_a_fresh_namespace(
        visits, lab_deployment, lab_outputs):
    r, kubeconfig = visits
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = lab_deployment["config"]
    before = int(visit(kubeconfig, "deploy/visits"))
    # A backup now, by the station with its own identity (the command its timers run).
    site = cfg.site("dc-astana")
    station = next(n for n in site.nodes if n.name == lab_outputs["monitoring"]["endpoints"][site.name]["station"])
    out = ssh(site.ip(station), f"sudo sovcloud-dr backup k8s --namespace {NS} --kubeconfig "
              f"/etc/sovcloud/dr/kubeconfig --site {site.name}", timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    backup = json.loads(out.stdout)
    assert backup["replicated"] and [d["pod"] for d in backup["source"]["dumps"]] == ["visits-db-0"], backup
    assert backup["source"]["not_backed_up"] == []  # the only claim is the database's, and its dump is in
    assert int(visit(kubeconfig, "deploy/visits")) == before + 1  # the original goes on after the backup
    try:
        restored = subprocess.run(
            [sys.executable, "-m", "dr", "--config", str(inventory.state_dir(cfg) / "dr" / "dr.json"), "restore",
             "--origin", site.name, "--dataset", f"k8s-{NS}", "--namespace", RESTORED, "--kubeconfig", kubeconfig],
            cwd=REPO, capture_output=True, text=True, timeout=600)
        assert restored.returncode == 0, restored.stdout[-2000:] + restored.stderr[-2000:]
        result = json.loads(restored.stdout)
        (dump,) = result["dumps"]
        assert dump["pod"] == "visits-db-0" and dump["bytes"] > 0, result
        # The restored database has the visits the backup holds, not those made since, on a volume of its own.
        kubectl(kubeconfig, "-n", RESTORED, "rollout", "status", "deploy/visits", "--timeout=120s", timeout=150)
        assert int(visit(kubeconfig, "deploy/visits", RESTORED)) == before + 1
        volumes = {ns: kubectl(kubeconfig, "-n", ns, "get", "pvc", "data-visits-db-0", "-o",
                               "jsonpath={.spec.volumeName}").stdout for ns in (NS, RESTORED)}
        assert volumes[RESTORED] and volumes[RESTORED] != volumes[NS], volumes
    finally:
        kubectl(kubeconfig, "delete", "namespace", RESTORED, "--ignore-not-found", "--wait=true", timeout=300,
                check=False)
