"""An agency's workload runs for real on the lab's workers (issue 6): `helm install` of the tenant and the
workload chart, pods admitted by PodSecurity restricted, scheduled on the site's workers, started by
containerd from an image pinned by digest, serving HTTP.

NEEDS THE LAB (`@pytest.mark.lab`): workers run containerd and a kubelet (playbooks/roles/kube_node).
"""

from __future__ import annotations

import json
import secrets
import time

import pytest
import yaml
from kubernetes import client, config

from lab import cluster, inventory, oci
from lab.nodes import ssh

from .conftest import TENANT, WORKLOAD

pytestmark = [pytest.mark.lab, pytest.mark.tools]

SITE = "dc-astana"


@pytest.fixture(scope="module")
def lab(lab_deployment):
    cfg = lab_deployment["config"]
    kubeconfig = lab_deployment["kubeconfigs"][SITE]
    return cfg, kubeconfig, config.new_client_from_config(config_file=kubeconfig)


def _ready(node: client.V1Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def test_every_worker_registers_ready_with_its_own_identity(lab):
    """Each worker's kubelet joins its site's cluster through the LB as system:node:<name>, labelled with its
    rack (topology zone) and site; control-plane nodes and gateways run no kubelet."""
    cfg, _, api = lab
    site = cfg.site(SITE)
    workers = {n.name: n for n in site.nodes if n.role == "worker"}
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + 120  # bounded: kubelets register within seconds of `pulumi up`
    while time.monotonic() < deadline:
        nodes = {n.metadata.name: n for n in core.list_node().items}
        if set(nodes) == set(workers) and all(_ready(n) for n in nodes.values()):
            break
        time.sleep(3)
    else:
        pytest.fail(f"nodes {sorted(nodes)}; ready: {sorted(k for k, n in nodes.items() if _ready(n))}; "
                    f"expected exactly the workers {sorted(workers)}")
    for name, node in nodes.items():
        assert node.metadata.labels["topology.kubernetes.io/zone"] == workers[name].rack
        assert node.metadata.labels["sovcloud.kz/site"] == SITE
        assert {a.address for a in node.status.addresses if a.type == "InternalIP"} == {site.ip(workers[name])}


def test_agency_workload_runs_under_restricted_pod_security_and_serves(lab, helm, tmp_path):
    cfg, kubeconfig, api = lab
    site = cfg.site(SITE)
    agency = "p" + secrets.token_hex(3)
    ns = f"{agency}-prod"
    digest = oci.manifest_digest(cluster.images_dir(inventory.state_dir(cfg)) / "sample-web.tar")  # as deployed
    repo = cluster.SAMPLE_IMAGE.rsplit(":", 1)[0]
    values = {
        "agency": agency, "nameOverride": "web", "replicas": 2,
        # Imported into every worker's containerd; IfNotPresent: no registry is asked for it.
        "image": {"repository": repo, "tag": "1", "digest": digest, "pullPolicy": "IfNotPresent"},
        "resources": {"requests": {"cpu": "20m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}},
    }
    (tmp_path / "tenant.yaml").write_text(yaml.safe_dump({"agency": agency, "namespaces": ["prod"]}))
    (tmp_path / "workload.yaml").write_text(yaml.safe_dump(values))

    def kh(*args: str, check: bool = True):
        return helm.run(*args, "--kubeconfig", kubeconfig, check=check)

    core = client.CoreV1Api(api)
    try:
        kh("install", agency, str(TENANT), "--namespace", "sovcloud-pods-test", "--create-namespace", "--wait",
           "--values", str(tmp_path / "tenant.yaml"))
        proc = kh("install", f"{agency}-wl", str(WORKLOAD), "--namespace", ns, "--wait", "--timeout", "100s",
                  "--values", str(tmp_path / "workload.yaml"), check=False)
        pods = core.list_namespaced_pod(ns).items
        assert proc.returncode == 0, (proc.stderr, [(p.metadata.name, p.spec.node_name, p.status.phase,
                                                     json.dumps(p.status.to_dict(), default=str)[-600:])
                                                    for p in pods])
        assert len(pods) == 2 and all(p.status.phase == "Running" for p in pods)
        workers = {n.name for n in site.nodes if n.role == "worker"}
        assert {p.spec.node_name for p in pods} <= workers
        for pod in pods:
            c = pod.spec.containers[0]
            assert c.image == f"{repo}@{digest}" and c.security_context.read_only_root_filesystem
            assert pod.status.container_statuses[0].ready
            # apiserver -> kubelet (logs, exec) over TLS verified against the cluster CA, by node address.
            core.read_namespaced_pod_log(pod.metadata.name, ns)
        # Served from the pod's own address on the site network, from a worker (the route to the other
        # worker's pod subnet is the kube_node role's).
        w1 = next(n for n in site.nodes if n.role == "worker")
        for pod in pods:
            r = ssh(site.ip(w1), f"curl -sS --max-time 5 http://{pod.status.pod_ip}:8080/")
            assert r.returncode == 0 and r.stdout == "sovcloud sample workload\n", (pod.spec.node_name, r.stderr)
    finally:
        kh("uninstall", f"{agency}-wl", "--namespace", ns, "--wait", "--ignore-not-found", check=False)
        kh("uninstall", agency, "--namespace", "sovcloud-pods-test", "--wait", "--ignore-not-found", check=False)
