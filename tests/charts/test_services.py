"""An agency's ordinary application inside a cluster (issue 16): a web tier reaches its database by the
Service's DNS name, across workers, through kube-proxy's ClusterIP; another agency resolves the same name but
cannot connect, because NetworkPolicies still hold on the pod behind the Service; names outside the cluster
resolve only as the site gateway's allow-list says.

NEEDS THE LAB (`@pytest.mark.lab`): kube-proxy and the kubelets' clusterDNS (playbooks/roles/kube_node), the
clusters' DNS (infra/cluster_dns.py) and the gateways' allow-list resolver (playbooks/roles/internet_gateway),
all deployed by `pulumi up` of the lab stack.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess

import pytest
import yaml
from kubernetes import client, config

from lab import gateway
from lab.cluster import until_sigterm
from lab.nodes import ssh
from lab.podman import env

from .conftest import TENANT, allow_between, eventually, kubectl

pytestmark = [pytest.mark.lab, pytest.mark.tools]

SITE = "dc-astana"
BODY = "sovcloud sample workload\n"


def pod(name: str, namespace: str, image: str, node: str, labels: dict[str, str], serve: bool) -> dict:
    """A restricted pod of the sample image on `node`: serving its page on 8080, or idle (a client)."""
    command = until_sigterm("/bin/busybox httpd -f -p 8080 -h /www" if serve else "/bin/busybox sleep 3600")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "automountServiceAccountToken": False,
                     "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                                     "command": command,
                                     **({"readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}}}
                                        if serve else {}),
                                     "resources": {"requests": {"cpu": "10m", "memory": "8Mi"},
                                                   "limits": {"cpu": "50m", "memory": "16Mi"}},
                                     "securityContext": {"allowPrivilegeEscalation": False,
                                                         "readOnlyRootFilesystem": True,
                                                         "capabilities": {"drop": ["ALL"]}}}]}}


@pytest.fixture(scope="module")
def app(lab_deployment, helm, tmp_path_factory):
    """Agency a: the database (the sample page on 8080, Service `db` on port 80) on one worker, its web tier's
    client on the other; agency b: a client on that same other worker. Both onboarded with the tenant chart."""
    cfg = lab_deployment["config"]
    kubeconfig = lab_deployment["kubeconfigs"][SITE]
    api = config.new_client_from_config(config_file=kubeconfig)
    site = cfg.site(SITE)
    w1, w2 = sorted(n.name for n in site.nodes if n.role == "worker")
    image = client.CoreV1Api(api).read_namespaced_config_map("sovcloud-platform", "kube-public").data[
        "sample-web.image"]
    image = image.split(":", 1)[0] + "@" + image.split("@", 1)[1]
    a, b = ("s" + secrets.token_hex(3) for _ in range(2))
    tmp = tmp_path_factory.mktemp("services")
    releases = []
    try:
        for agency, same_ns in ((a, True), (b, False)):
            values = tmp / f"{agency}.yaml"
            # a's tiers talk to each other (allowSameNamespace); b is a stranger to a.
            values.write_text(yaml.safe_dump({"agency": agency, "namespaces": ["prod"],
                                              "network": {"allowSameNamespace": same_ns}}))
            releases.append(agency)
            helm.run("install", agency, str(TENANT), "--namespace", "sovcloud-services-test", "--create-namespace",
                     "--wait", "--values", str(values), "--kubeconfig", kubeconfig)
        objects = [pod("db", f"{a}-prod", image, w2, {"app": "db"}, serve=True),
                   pod("web", f"{a}-prod", image, w1, {"app": "web"}, serve=False),
                   pod("other", f"{b}-prod", image, w1, {"app": "other"}, serve=False),
                   {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": f"{a}-prod"},
                    "spec": {"selector": {"app": "db"}, "ports": [{"port": 80, "targetPort": 8080}]}}]
        kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                  "items": objects}))
        for ns, name in ((f"{a}-prod", "db"), (f"{a}-prod", "web"), (f"{b}-prod", "other")):
            kubectl(kubeconfig, "-n", ns, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s",
                    timeout=150)
        service = client.CoreV1Api(api).read_namespaced_service("db", f"{a}-prod")
        db = client.CoreV1Api(api).read_namespaced_pod("db", f"{a}-prod")
        yield {"cfg": cfg, "kubeconfig": kubeconfig, "a": a, "b": b, "cluster_ip": service.spec.cluster_ip,
               "db_ip": db.status.pod_ip, "db_node": w2, "client_node": w1, "site": site}
    finally:
        for agency in reversed(releases):  # the namespaces go with the tenant, and their pods with them
            helm.run("uninstall", agency, "--namespace", "sovcloud-services-test", "--wait", "--kubeconfig",
                     kubeconfig, check=False)


def in_pod(app: dict, agency: str, name: str, script: str) -> subprocess.CompletedProcess[str]:
    return kubectl(app["kubeconfig"], "-n", f"{app[agency]}-prod", "exec", name, "--", "/bin/busybox", "sh", "-c",
                   script, check=False)


def lookup(app: dict, agency: str, name: str, host: str) -> list[str] | str:
    """The addresses busybox nslookup gets from the pod's resolver (the cluster DNS), or its error."""
    r = in_pod(app, agency, name, f"/bin/busybox nslookup {host}")
    answers = r.stdout.split("Name:", 1)[1] if "Name:" in r.stdout else ""
    addresses = re.findall(r"Address(?: \d+)?:\s*(\d+\.\d+\.\d+\.\d+)", answers)
    return addresses or f"rc={r.returncode} {r.stdout.strip()[-300:]} {r.stderr.strip()[-300:]}"


def fetch(app: dict, agency: str, name: str, host: str) -> str:
    """GET / from host:80 (a name is resolved by the pod's resolver first): the page, or "blocked" when the
    connection times out (dropped by a policy)."""
    r = in_pod(app, agency, name, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 3 {host} 80")
    if r.returncode == 0 and r.stdout.startswith("HTTP/1.1 200 "):
        return r.stdout.split("\n\n", 1)[1]
    return "blocked" if "timed out" in r.stderr else f"rc={r.returncode} {r.stdout[:200]} {r.stderr[-300:]}"


def test_a_pod_reaches_a_service_on_another_worker_by_its_dns_name(app):
    """web (worker 1) -> db.<ns>.svc.cluster.local -> the Service's ClusterIP -> kube-proxy -> the db pod on
    worker 2; the short name resolves through the pod's search path too."""
    a, ns = app["a"], f"{app['a']}-prod"
    assert app["db_node"] != app["client_node"]
    assert lookup(app, "a", "web", f"db.{ns}.svc.cluster.local") == [app["cluster_ip"]]
    assert lookup(app, "a", "web", "db") == [app["cluster_ip"]]
    assert fetch(app, "a", "web", f"db.{ns}.svc.cluster.local") == BODY
    assert fetch(app, "a", "web", app["cluster_ip"]) == BODY
    assert a


@pytest.mark.control("SC-NET-03")
def test_another_agency_resolves_the_name_but_the_policy_holds_behind_the_service(app):
    """Agency b's pod (on the same worker as a's web) gets the same address for the name, and its connection is
    dropped at the db pod; allowing b explicitly (a admits b, b allows itself egress) lets the same probe
    through, and withdrawing it blocks it again: what blocks is the policy on the pod behind the Service."""
    a, b, kc = app["a"], app["b"], app["kubeconfig"]
    name = f"db.{a}-prod.svc.cluster.local"
    assert lookup(app, "b", "other", name) == [app["cluster_ip"]]
    assert fetch(app, "b", "other", name) == "blocked"
    for policy in allow_between(f"{b}-prod", f"{a}-prod", 8080, "allow-from-b", target_pods={"app": "db"}):
        kubectl(kc, "apply", "-f", "-", input=json.dumps(policy))
    assert eventually(lambda: fetch(app, "b", "other", name), BODY) == BODY
    kubectl(kc, "-n", f"{a}-prod", "delete", "networkpolicy", "allow-from-b")
    assert eventually(lambda: fetch(app, "b", "other", name), "blocked") == "blocked"


@pytest.mark.control("SC-NET-01")
def test_names_outside_the_cluster_resolve_only_as_the_gateway_allows(app):
    """The allow-listed name resolves in a pod to the stand-in Internet's address; the other name, which the
    gateway itself knows (its hosts file), does not exist for the pod."""
    cfg, site = app["cfg"], app["site"]
    assert lookup(app, "a", "web", "repo.internet.lab") == [gateway.internet_ip(cfg, "repo.internet.lab")]
    r = subprocess.run(["podman", "exec", cfg.container(site.gateway.name), "getent", "hosts",
                        "blocked.internet.lab"], capture_output=True, text=True, env=env())
    assert r.returncode == 0 and gateway.internet_ip(cfg, "blocked.internet.lab") in r.stdout  # the name exists
    refused = lookup(app, "a", "web", "blocked.internet.lab")
    assert isinstance(refused, str) and "NXDOMAIN" in refused, refused


def test_kube_proxy_runs_on_every_worker_with_its_own_identity(app):
    """kube-proxy is active on each worker, authenticates as system:kube-proxy (not the kubelet's identity), and
    keeps the Service's rules in nftables."""
    site = app["site"]
    for node in (n for n in site.nodes if n.role == "worker"):
        r = ssh(site.ip(node), "systemctl is-active kube-proxy && sudo nft list table ip kube-proxy | "
                "grep -c 'ip daddr' && sudo awk '/client-certificate-data/ {print $2}' "
                "/var/lib/kube-proxy/kubeconfig | base64 -d | openssl x509 -noout -subject", timeout=30)
        assert r.returncode == 0, (node.name, r.stdout, r.stderr)
        lines = r.stdout.split()
        assert lines[0] == "active" and "CN = system:kube-proxy" in r.stdout, (node.name, r.stdout)
        assert app["cluster_ip"] in ssh(site.ip(node), "sudo nft list table ip kube-proxy", timeout=30).stdout
