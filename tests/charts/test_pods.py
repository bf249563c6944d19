"""Agencies' workloads run for real on the lab's workers (issue 6): `helm install` of the tenant and the
workload chart, pods admitted by PodSecurity restricted, scheduled on the site's workers, started by
containerd from an image pinned by digest; the sample workload is published through the gateway over TLS
and is reachable only that way; another agency cannot reach it.

NEEDS THE LAB (`@pytest.mark.lab`): workers run containerd, a kubelet and the NetworkPolicy agent
(playbooks/roles/kube_node); the gateway runs the route agent (playbooks/roles/gateway_routes).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from lab import cluster, gateway, inventory, oci
from lab.nodes import ssh
from lab.podman import env
from tests.docs import verbatim_block

from .conftest import REPO, TENANT, WORKLOAD, allow_between, eventually, kubectl

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


BODY = "sovcloud sample workload\n"


@pytest.fixture(scope="module")
def agencies(lab, helm, tmp_path_factory):
    """Two agencies on dc-astana, each onboarded with the tenant chart as the workload README shows: `a`
    publishes the sample workload at <a>.gov.kz through the gateway; `b` runs the same image, unpublished."""
    cfg, kubeconfig, api = lab
    site = cfg.site(SITE)
    tmp = tmp_path_factory.mktemp("agencies")
    # What the platform tells an agency (ConfigMap kube-public/sovcloud-platform), read with the agency's own
    # tools: the images every worker holds. The tenant chart finds the gateway nodes there by itself.
    platform = client.CoreV1Api(api).read_namespaced_config_map("sovcloud-platform", "kube-public").data
    image = platform["sample-web.image"]  # repo:tag@digest
    repo, digest = image.split(":", 1)[0], image.split("@", 1)[1]
    assert digest == oci.manifest_digest(cluster.images_dir(inventory.state_dir(cfg)) / "sample-web.tar")
    a, b = ("p" + secrets.token_hex(3) for _ in range(2))
    releases = []

    def kh(*args: str, check: bool = True):
        return helm.run(*args, "--kubeconfig", kubeconfig, check=check)

    def onboard(agency: str, replicas: int, host: str | None):
        tenant = {"agency": agency, "namespaces": ["prod"]}  # gateways: the platform's (sovcloud-platform)
        workload = {
            "agency": agency, "nameOverride": "web", "replicas": replicas,
            # Imported into every worker's containerd; IfNotPresent: no registry is asked for it.
            "image": {"repository": repo, "tag": "1", "digest": digest, "pullPolicy": "IfNotPresent"},
            "resources": {"requests": {"cpu": "20m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}},
            "route": {"enabled": host is not None, "host": host or ""},
            "pdb": {"enabled": replicas > 1},  # a budget over one pod would forbid every eviction
        }
        (tmp / f"{agency}-tenant.yaml").write_text(yaml.safe_dump(tenant))
        (tmp / f"{agency}-workload.yaml").write_text(yaml.safe_dump(workload))
        releases.append((agency, "sovcloud-pods-test"))
        kh("install", agency, str(TENANT), "--namespace", "sovcloud-pods-test", "--create-namespace", "--wait",
           "--values", str(tmp / f"{agency}-tenant.yaml"))
        releases.append((f"{agency}-wl", f"{agency}-prod"))
        return kh("install", f"{agency}-wl", str(WORKLOAD), "--namespace", f"{agency}-prod", "--wait",
                  "--timeout", "100s", "--values", str(tmp / f"{agency}-workload.yaml"), check=False)

    core = client.CoreV1Api(api)
    try:
        installs = {a: onboard(a, 2, f"{a}.gov.kz"), b: onboard(b, 1, None)}
        pods = {x: core.list_namespaced_pod(f"{x}-prod").items for x in (a, b)}
        for x, proc in installs.items():
            assert proc.returncode == 0, (proc.stderr, [(p.metadata.name, p.spec.node_name, p.status.phase,
                                                         json.dumps(p.status.to_dict(), default=str)[-600:])
                                                        for p in pods[x]])
        yield {"a": a, "b": b, "host": f"{a}.gov.kz", "digest": digest, "repo": repo, "pods": pods,
               "kubeconfig": kubeconfig, "site": site, "cfg": cfg}
    finally:
        for release, ns in reversed(releases):
            kh("uninstall", release, "--namespace", ns, "--wait", "--ignore-not-found", check=False)


def test_agency_workload_runs_under_restricted_pod_security(lab, agencies):
    _, _, api = lab
    site, a, repo, digest = agencies["site"], agencies["a"], agencies["repo"], agencies["digest"]
    pods = agencies["pods"][a]
    assert len(pods) == 2 and all(p.status.phase == "Running" for p in pods)
    workers = {n.name for n in site.nodes if n.role == "worker"}
    assert {p.spec.node_name for p in pods} <= workers
    core = client.CoreV1Api(api)
    for pod in pods:
        c = pod.spec.containers[0]
        assert c.image == f"{repo}@{digest}" and c.security_context.read_only_root_filesystem
        assert pod.status.container_statuses[0].ready  # kubelet probes reach the pod (from its own node)
        # apiserver -> kubelet (logs, exec) over TLS verified against the cluster CA, by node address.
        core.read_namespaced_pod_log(pod.metadata.name, f"{a}-prod")
    # The tenant was installed without naming its gateways: the chart took the site's gateway node from the
    # platform (ConfigMap kube-public/sovcloud-platform).
    policy = client.NetworkingV1Api(api).read_namespaced_network_policy("allow-ingress-from-gateway", f"{a}-prod")
    blocks = [peer.ip_block.cidr for rule in policy.spec.ingress for peer in rule._from if peer.ip_block]
    assert blocks == [f"{site.ip(site.gateway)}/32"], blocks


# HTTPS from the stand-in Internet to the gateway, SNI and certificate checked against the stack's root CA.
_HTTPS = """
import os, socket, ssl, sys
ctx = ssl.create_default_context(cadata=os.environ["CA"])
host, ip = sys.argv[1], sys.argv[2]
try:
    with ctx.wrap_socket(socket.create_connection((ip, 443), 5), server_hostname=host) as s:
        s.sendall(f"GET / HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        print(s.version(), data.decode().split("\\r\\n\\r\\n", 1)[1] if b" 200 " in data[:20] else data[:40])
except (ssl.SSLError, OSError) as e:
    print("refused", type(e).__name__, e)
"""


def _from_internet(cfg, host: str) -> str:
    ca = (inventory.state_dir(cfg) / SITE / "pki" / "root-ca.crt").read_text()
    ip = gateway.gateway_ips(cfg, cfg.site(SITE))["internet"]
    r = subprocess.run(["podman", "exec", "-e", f"CA={ca}", cfg.container("inet-repo"), "python3", "-c", _HTTPS,
                        host, ip], capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.control("SC-NET-01", "SC-CRY-01")
def test_sample_workload_is_published_through_the_gateway_over_tls(agencies):
    """From the Internet, the agency's hostname answers over TLS with a certificate for that name from the
    gateway's routes CA; the gateway proxies to every ready pod (addresses from EndpointSlices)."""
    cfg, host, site = agencies["cfg"], agencies["host"], agencies["site"]
    got = eventually(lambda: _from_internet(cfg, host), f"TLSv1.3 {BODY}\n", 60)
    assert got == f"TLSv1.3 {BODY}\n"
    conf = subprocess.run(["podman", "exec", cfg.container(site.gateway.name), "cat",
                           "/var/lib/sovcloud-gateway/routes.d/agencies.conf"],
                          capture_output=True, text=True, env=env())
    for pod in agencies["pods"][agencies["a"]]:
        assert f"server {pod.status.pod_ip}:8080;" in conf.stdout, conf.stdout
    # The pods' own addresses are not routed from the Internet at all.
    pod_ip = agencies["pods"][agencies["a"]][0].status.pod_ip
    r = subprocess.run(["podman", "exec", cfg.container("inet-repo"), "python3", "-c",
                        f"import socket; socket.create_connection(('{pod_ip}', 8080), 3)"],
                       capture_output=True, text=True, env=env())
    assert r.returncode != 0


@pytest.mark.control("SC-NET-03", "SC-NET-01")
def test_pods_are_reachable_only_through_the_gateway(agencies):
    """SC-NET-03 enforced by the workers' NetworkPolicy agent: another agency's pod and a node outside the
    gateway cannot reach the published pods; once agency a explicitly allows b (and b allows itself egress),
    b gets through, and loses the way again when a withdraws it - so what blocks is the policy, nothing else."""
    kc, a, b, site = agencies["kubeconfig"], agencies["a"], agencies["b"], agencies["site"]
    target = agencies["pods"][a][0]
    client_pod = agencies["pods"][b][0]
    ip = target.status.pod_ip

    def from_b() -> str:
        """The page, or "blocked" when the connection times out (dropped); anything else is returned as is.
        (busybox nc: the static busybox's wget crashes resolving even a literal address.)"""
        r = kubectl(kc, "-n", f"{b}-prod", "exec", client_pod.metadata.name, "--", "/bin/busybox", "sh", "-c",
                     f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 3 {ip} 8080", check=False)
        if r.returncode == 0 and r.stdout.startswith("HTTP/1.1 200 "):
            return r.stdout.split("\n\n", 1)[1]  # (text mode has turned CRLF into LF)
        return "blocked" if "timed out" in r.stderr else f"rc={r.returncode} {r.stdout[:200]} {r.stderr[-300:]}"

    assert from_b() == "blocked"
    # A worker that is not the pod's node: forwarded into the pod's node, where the policy drops it.
    other = next(n for n in site.nodes if n.role == "worker" and n.name != target.spec.node_name)
    r = ssh(site.ip(other), f"curl -sS --max-time 3 http://{ip}:8080/")
    assert r.returncode == 28, (r.returncode, r.stdout, r.stderr)  # curl: timed out (dropped, not refused)
    for policy in allow_between(f"{b}-prod", f"{a}-prod", 8080, "allow-from-b"):
        kubectl(kc, "apply", "-f", "-", input=json.dumps(policy))
    assert eventually(from_b, BODY) == BODY
    kubectl(kc, "-n", f"{a}-prod", "delete", "networkpolicy", "allow-from-b")
    assert eventually(from_b, "blocked") == "blocked"


@pytest.mark.control("SC-NET-01")
def test_gateway_refuses_a_route_into_another_agencys_namespace(agencies):
    """Agency b registers a route to a's Service by hand: the gateway does not publish it (no certificate,
    no answer for the name) and its agent says why."""
    cfg, kc, a, b, site = agencies["cfg"], agencies["kubeconfig"], agencies["a"], agencies["b"], agencies["site"]
    host = f"{b}-steal.gov.kz"
    routes = [{"host": host, "path": "/", "tls": {"minVersion": "1.2"},
               "backend": {"namespace": f"{a}-prod", "service": "web", "port": 80}}]
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "steal", "namespace": f"{b}-prod", "labels": {"sovcloud.kz/gateway-routes": "true"}},
          "data": {"routes.json": json.dumps(routes)}}
    kubectl(kc, "apply", "-f", "-", input=json.dumps(cm))
    try:
        why = f"backend namespace '{a}-prod' does not belong to agency '{b}'"

        def logged() -> bool:
            r = subprocess.run(["podman", "exec", cfg.container(site.gateway.name), "journalctl", "-q", "-o", "cat",
                                "-u", "sovcloud-gateway-routes"], capture_output=True, text=True, env=env())
            return why in r.stdout

        assert eventually(logged, True)
        assert _from_internet(cfg, host).startswith("refused")
    finally:
        kubectl(kc, "-n", f"{b}-prod", "delete", "configmap", "steal", check=False)


README = WORKLOAD / "README.md"
README_MARK = "<!-- verbatim: tests/charts/test_pods.py -->"


def test_the_workload_readme_onboards_an_agency_as_written(lab):
    """charts/workload/README.md's onboarding, pasted verbatim into a shell on the lab machine: the tenant and
    the workload install from what the platform publishes, and the page answers through the gateway."""
    cfg, kubeconfig, _ = lab
    block = verbatim_block(README, README_MARK)
    agency = inventory.state_dir(cfg) / "agencies" / "egov" / "astana.conf"  # egov on dc-astana's cluster
    assert f"KUBECONFIG={str(agency).replace(str(Path.home()), '~')} " in block, "the README names another identity"
    releases = (("web", "egov-prod"),)
    try:
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=REPO, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert r.stdout.endswith(BODY), r.stdout[-1500:]
        workers = {n.name for n in cfg.site(SITE).nodes if n.role == "worker"}
        running = [line.split() for line in r.stdout.splitlines() if line.startswith("web-")]
        assert len(running) == 2 and all(p[2] == "Running" for p in running), r.stdout
        assert all(workers & set(p) for p in running), r.stdout  # the NODE column of `get pods -o wide`
    finally:
        for release, ns in releases:
            subprocess.run(["helm", "uninstall", release, "-n", ns, "--wait", "--ignore-not-found", "--kubeconfig",
                            kubeconfig], capture_output=True, timeout=180)
        Path("/tmp/sovcloud-root-ca.crt").unlink(missing_ok=True)
