"""Install, upgrade and uninstall both charts against a real kube-apiserver.

NEEDS THE LAB CLUSTER (`@pytest.mark.lab`): the `kubeconfig` fixture below uses the lab's primary cluster
(a kubeconfig with cluster-admin on the lab's kube-apiserver + kube-controller-manager). It is the
single place to wire the lab cluster in; until then these tests fail, never skip.

Controls: SC-K8S-01 (PSA rejects a privileged pod), SC-K8S-02 (roles as rendered), SC-K8S-03 (quota
rejects a LoadBalancer), SC-NET-03 (default deny present).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .conftest import TENANT, WORKLOAD

pytestmark = [pytest.mark.lab, pytest.mark.tools]

RELEASE_NS = "sovcloud-charts-test"
DIGEST = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def kubeconfig(lab_deployment) -> Path:
    """The lab's primary cluster (SOVCLOUD_KUBECONFIG overrides it, e.g. for another cluster)."""
    path = Path(os.environ.get("SOVCLOUD_KUBECONFIG") or lab_deployment["kubeconfigs"]["dc-astana"])
    if not path.is_file():
        pytest.fail(f"{path}: no such kubeconfig; bring the lab up (`make lab`) or set SOVCLOUD_KUBECONFIG")
    return path


@pytest.fixture(scope="module")
def api(kubeconfig) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="module")
def kh(helm, kubeconfig):
    """helm bound to the lab cluster."""

    def run(*args: str, check: bool = True):
        return helm.run(*args, "--kubeconfig", str(kubeconfig), check=check)

    return run


@pytest.fixture
def agency(kh):
    """A fresh agency name per test; whatever the test leaves is uninstalled afterwards."""
    name = "t" + secrets.token_hex(3)
    yield name
    for release, namespace in ((f"{name}-wl", f"{name}-prod"), (name, RELEASE_NS)):
        kh("uninstall", release, "--namespace", namespace, "--wait", "--ignore-not-found", check=False)


def tenant_values(tmp_path: Path, agency: str, **extra) -> Path:
    values = {"agency": agency, "namespaces": ["prod"], **extra}
    path = tmp_path / f"tenant-{agency}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def workload_values(tmp_path: Path, agency: str, tag: str) -> Path:
    values = {
        "agency": agency,
        "nameOverride": "web",
        "image": {"repository": "registry.sovcloud.kz/test/web", "tag": tag, "digest": DIGEST},
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "100m", "memory": "128Mi"},
        },
        "route": {"enabled": True, "host": f"{agency}.gov.kz", "path": "/", "minTlsVersion": "1.2"},
    }
    path = tmp_path / f"workload-{agency}-{tag}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def wait_gone(probe, what: str, timeout: float = 180) -> None:
    """Poll until probe() raises 404 (namespace deletion is asynchronous: finalizers, the GC)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            probe()
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(2)
    pytest.fail(f"{what} still present {timeout}s after helm uninstall")


def test_dry_run_server_validates_against_the_api(kh, agency, tmp_path):
    # --dry-run=server builds every object against the server's OpenAPI schema and checks for
    # conflicts with what exists, but creates nothing.
    proc = kh(
        "install",
        agency,
        str(TENANT),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--values",
        str(tenant_values(tmp_path, agency)),
        "--dry-run=server",
    )
    assert "kind: Namespace" in proc.stdout
    assert kh("status", agency, "--namespace", RELEASE_NS, check=False).returncode != 0


def test_bad_values_create_nothing(kh, api, agency, tmp_path):
    values = tenant_values(
        tmp_path,
        agency,
        gateway={
            "domain": "gov.kz",
            "routes": [{"host": "portal.example.com", "namespace": "prod", "service": "web", "port": 443}],
        },
    )
    proc = kh(
        "install",
        agency,
        str(TENANT),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--values",
        str(values),
        check=False,
    )
    assert proc.returncode != 0
    assert "gateway.routes[0].host" in proc.stderr
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(api).read_namespace(f"{agency}-prod")
    assert exc.value.status == 404


def test_install_upgrade_uninstall(kh, api, agency, tmp_path):
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    net = client.NetworkingV1Api(api)
    ns = f"{agency}-prod"

    kh(
        "install",
        agency,
        str(TENANT),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--wait",
        "--values",
        str(tenant_values(tmp_path, agency)),
    )
    labels = core.read_namespace(ns).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["sovcloud.kz/data-classification"] == "internal"
    assert {p.metadata.name for p in net.list_namespaced_network_policy(ns).items} >= {
        "default-deny-all",
        "allow-egress-dns",
        "allow-egress-internet-gateway",
        "allow-ingress-from-monitoring",
    }
    assert {r.metadata.name for r in rbac.list_namespaced_role(ns).items} == {
        "agency-admin",
        "agency-developer",
        "agency-viewer",
    }
    assert not rbac.list_cluster_role(label_selector=f"sovcloud.kz/agency={agency}").items

    # Pod Security admission enforces restricted: a privileged pod is refused by the API server.
    bad_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad"},
        "spec": {
            "containers": [{"name": "c", "image": "x@" + DIGEST, "securityContext": {"privileged": True}}]
        },
    }
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod(ns, bad_pod, dry_run="All")
    assert exc.value.status == 403 and "violates PodSecurity" in exc.value.body

    # The quota caps LoadBalancer Services at zero.
    lb = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]},
    }
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_service(ns, lb)
    assert exc.value.status == 403 and "quota" in exc.value.body

    # The workload passes restricted: PSA would print a "would violate PodSecurity" warning otherwise.
    wl = f"{agency}-wl"
    proc = kh(
        "install",
        wl,
        str(WORKLOAD),
        "--namespace",
        ns,
        "--values",
        str(workload_values(tmp_path, agency, "1.0.0")),
    )
    assert "PodSecurity" not in proc.stderr, proc.stderr
    apps = client.AppsV1Api(api)
    dep = apps.read_namespaced_deployment("web", ns)
    assert dep.spec.template.spec.automount_service_account_token is False
    assert (
        core.read_namespaced_config_map("gateway-route-web", ns).metadata.labels["sovcloud.kz/gateway-routes"]
        == "true"
    )

    # Upgrades: a quota change and a second namespace on the tenant, a new tag on the workload.
    kh(
        "upgrade",
        agency,
        str(TENANT),
        "--namespace",
        RELEASE_NS,
        "--wait",
        "--values",
        str(tenant_values(tmp_path, agency, namespaces=["prod", "dev"], quota={"pods": 7})),
    )
    assert core.read_namespaced_resource_quota("tenant-quota", ns).spec.hard["pods"] == "7"
    assert (
        core.read_namespace(f"{agency}-dev").metadata.labels["pod-security.kubernetes.io/enforce"]
        == "restricted"
    )
    kh(
        "upgrade",
        wl,
        str(WORKLOAD),
        "--namespace",
        ns,
        "--values",
        str(workload_values(tmp_path, agency, "1.1.0")),
    )
    assert apps.read_namespaced_deployment("web", ns).metadata.labels["app.kubernetes.io/version"] == "1.1.0"

    # Uninstall leaves nothing: no release, no namespaces, nothing labelled with the agency.
    kh("uninstall", wl, "--namespace", ns, "--wait")
    with pytest.raises(ApiException) as exc:
        apps.read_namespaced_deployment("web", ns)
    assert exc.value.status == 404
    kh("uninstall", agency, "--namespace", RELEASE_NS, "--wait")
    for name in (ns, f"{agency}-dev"):
        wait_gone(lambda name=name: core.read_namespace(name), f"namespace {name}")
    selector = f"sovcloud.kz/agency={agency}"
    assert not core.list_namespace(label_selector=selector).items
    assert not rbac.list_role_binding_for_all_namespaces(label_selector=selector).items
    assert not core.list_config_map_for_all_namespaces(label_selector=selector).items
    assert agency not in kh("list", "--all-namespaces", "--short").stdout.split()
