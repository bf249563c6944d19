"""An agency's StatefulSet gets storage as in any Kubernetes (issue 16): the workload chart's claim binds to a
volume the cluster's default StorageClass provisions on the pod's worker, the data outlives the pod, and deleting
the claim removes the volume's directory from the worker.

NEEDS THE LAB (`@pytest.mark.lab`): the clusters' storage (infra/cluster_storage.py, deployed by `pulumi up` of
the lab stack) and the lab stack's tenant `egov` on dc-astana, acting with its own kubeconfig.
"""

from __future__ import annotations

import json
import secrets
import shlex

import pytest
import yaml

from infra import cluster_storage
from lab import inventory
from lab.nodes import ssh

from .conftest import WORKLOAD, eventually, kubectl

pytestmark = [pytest.mark.lab, pytest.mark.tools]

SITE, CLUSTER, AGENCY = "dc-astana", "astana", "egov"
NS = f"{AGENCY}-prod"


def _json(kubeconfig: str, *args: str) -> dict:
    return json.loads(kubectl(kubeconfig, *args, "-o", "json").stdout)


def _on_worker(site, node: str, command: str) -> str:
    r = ssh(site.ip(node), f"sudo sh -c {shlex.quote(command)}", timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def stateful(lab_deployment, helm, tmp_path_factory):
    """The sample image as a one-replica StatefulSet with a 64Mi volume, installed by the agency itself."""
    cfg = lab_deployment["config"]
    admin = lab_deployment["kubeconfigs"][SITE]
    agency = str(inventory.state_dir(cfg) / "agencies" / AGENCY / f"{CLUSTER}.conf")
    platform = _json(agency, "-n", "kube-public", "get", "configmap", "sovcloud-platform")["data"]
    image = platform["sample-web.image"]  # repo:tag@digest
    release = "st" + secrets.token_hex(3)
    values = tmp_path_factory.mktemp("storage") / "values.yaml"
    values.write_text(yaml.safe_dump({
        "agency": AGENCY, "kind": "StatefulSet", "replicas": 1, "pdb": {"enabled": False},
        "image": {"repository": image.split(":", 1)[0], "tag": "1", "digest": image.split("@", 1)[1],
                  "pullPolicy": "IfNotPresent"},
        "resources": {"requests": {"cpu": "20m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}},
        "persistence": {"enabled": True, "size": "64Mi"},  # storageClass empty: the cluster default
    }))
    helm.run("install", release, str(WORKLOAD), "--namespace", NS, "--wait", "--timeout", "180s",
             "--values", str(values), "--kubeconfig", agency)
    try:
        yield {"agency": agency, "admin": admin, "release": release, "site": cfg.site(SITE)}
    finally:
        helm.run("uninstall", release, "--namespace", NS, "--wait", "--ignore-not-found", "--kubeconfig", agency,
                 check=False)
        kubectl(agency, "-n", NS, "delete", "pvc", "-l", f"app.kubernetes.io/instance={release}",
                "--ignore-not-found", check=False)


def _pod(stateful) -> dict:
    return _json(stateful["agency"], "-n", NS, "get", "pod", f"{stateful['release']}-0")


def _claim_and_volume(stateful) -> tuple[dict, dict, str]:
    """The release's claim, the PersistentVolume bound to it (read as the cluster admin: volumes are not an
    agency's), and that volume's directory on its worker."""
    agency, release = stateful["agency"], stateful["release"]
    (claim,) = _json(agency, "-n", NS, "get", "pvc", "-l", f"app.kubernetes.io/instance={release}")["items"]
    volume = _json(stateful["admin"], "get", "pv", claim["spec"]["volumeName"])
    return claim, volume, (volume["spec"].get("hostPath") or volume["spec"]["local"])["path"]


def test_the_claim_binds_to_a_volume_on_the_pods_worker_and_the_data_outlives_the_pod(stateful):
    agency, site, release = stateful["agency"], stateful["site"], stateful["release"]
    pod = _pod(stateful)
    node = pod["spec"]["nodeName"]
    claim, volume, path = _claim_and_volume(stateful)
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == cluster_storage.STORAGE_CLASS  # the default, unnamed by the chart
    # The volume is a directory on the pod's worker, and only that worker's pods may mount it.
    terms = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert [e["values"] for t in terms for e in t["matchExpressions"]] == [[node]]
    assert path.startswith(cluster_storage.VOLUMES_DIR + "/")
    value = secrets.token_hex(8)
    kubectl(agency, "-n", NS, "exec", f"{release}-0", "--", "/bin/busybox", "sh", "-c", f"echo {value} > /data/v")
    assert _on_worker(site, node, f"cat {path}/v").strip() == value  # on the worker's disk, not in the pod
    # A new pod of the StatefulSet (same name, same claim) finds it again.
    old_uid = pod["metadata"]["uid"]
    kubectl(agency, "-n", NS, "delete", "pod", f"{release}-0", "--wait=true")
    kubectl(agency, "-n", NS, "wait", "--for=condition=Ready", f"pod/{release}-0", "--timeout=120s", timeout=150)
    assert _pod(stateful)["metadata"]["uid"] != old_uid
    r = kubectl(agency, "-n", NS, "exec", f"{release}-0", "--", "/bin/busybox", "cat", "/data/v")
    assert r.stdout.strip() == value


def test_deleting_the_claim_removes_the_volume_from_the_worker(stateful):
    agency, admin, site, release = stateful["agency"], stateful["admin"], stateful["site"], stateful["release"]
    node = _pod(stateful)["spec"]["nodeName"]
    claim, volume, path = _claim_and_volume(stateful)
    exists = f"test -d {path} && echo yes || echo no"
    assert _on_worker(site, node, exists).strip() == "yes"  # the control: there while claimed
    kubectl(agency, "-n", NS, "delete", "statefulset", "-l", f"app.kubernetes.io/instance={release}",
            "--wait=true", timeout=120)
    kubectl(agency, "-n", NS, "delete", "pvc", claim["metadata"]["name"], "--wait=true", timeout=120)
    # The reclaim policy is Delete: the provisioner's helper pod removes the directory, then the volume goes.
    assert eventually(lambda: _on_worker(site, node, exists).strip(), "no", seconds=90) == "no"
    left = eventually(lambda: kubectl(admin, "get", "pv", volume["metadata"]["name"], "--ignore-not-found",
                                      "-o", "name").stdout.strip(), "", seconds=60)
    assert left == "", f"{left} still there after its claim was deleted"
