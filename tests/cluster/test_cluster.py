"""Each lab site's HA control plane, installed by the lab stack's `pulumi up` (SiteHosts runs
playbooks/cluster.yml with the Pulumi-issued PKI; needs the podman lab)."""

import json
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from dr import runbook
from infra.automation import changed_resources
from lab import cluster, gateway, inventory
from lab.deploy import lab_stack
from lab.nodes import start_node, wait_booted, wait_ssh
from lab.podman import podman
from tests.cluster.tls_floor import ClientCert, assert_tls_floor
from tests.conftest import require_tool

pytestmark = pytest.mark.lab
STACK = Path(__file__).resolve().parents[2] / "infra" / "stacks" / "lab.yaml"


@pytest.fixture(scope="module")
def cfg(lab_deployment):
    return lab_deployment["config"]


@pytest.fixture(scope="module")
def kubeconfigs(lab_deployment):
    return lab_deployment["kubeconfigs"]


def kubectl(kubeconfig: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("kubectl"), "--kubeconfig", kubeconfig, "--request-timeout=10s",
                           *args], capture_output=True, text=True, timeout=timeout)


def etcdctl(cfg, site, *args: str, members: list | None = None) -> subprocess.CompletedProcess[bytes]:
    return cluster.etcdctl(site, *args, members=members, state_dir=inventory.state_dir(cfg))


def test_kubectl_works_against_both_sites_from_the_host(cfg, kubeconfigs):
    """SC-AVL-02: every site serves its API through the LB on its gateway; the admin kubeconfig works."""
    assert set(kubeconfigs) == {s.name for s in cfg.sites}
    for site in cfg.sites:
        r = kubectl(kubeconfigs[site.name], "get", "ns", "-o", "name")
        assert r.returncode == 0, r.stderr
        assert "namespace/kube-system" in r.stdout.split()
        assert cluster.api_endpoint(site) in Path(kubeconfigs[site.name]).read_text()


def test_etcd_has_three_members_over_three_racks(cfg, kubeconfigs):
    """SC-AVL-02: 3 etcd members per site, one per rack, all healthy."""
    for site in cfg.sites:
        r = etcdctl(cfg, site, "member", "list", "-w", "json")
        assert r.returncode == 0, r.stderr
        names = sorted(m["name"] for m in json.loads(r.stdout)["members"])
        cps = cluster.control_plane(site)
        assert names == sorted(n.name for n in cps)
        assert len({n.rack for n in cps}) == 3
        h = etcdctl(cfg, site, "endpoint", "health")
        assert h.returncode == 0 and cluster.healthy_members(h) == 3, h.stderr


def test_anonymous_requests_rejected(cfg, kubeconfigs):
    """SC-K8S-04: --anonymous-auth=false: a request without credentials gets 401, even for /readyz."""
    for site in cfg.sites:
        ca = cluster.ssl_context(site, admin=False, state_dir=inventory.state_dir(cfg))
        for path in ("/api/v1/namespaces", "/readyz"):
            r = httpx.get(f"{cluster.api_endpoint(site)}{path}", verify=ca, timeout=10)
            assert r.status_code == 401, (site.name, path, r.status_code)


def test_tls_below_1_2_refused(cfg, kubeconfigs, lab_outputs, tmp_path):
    """SC-CRY-01: every TLS endpoint of each site (the API through the LB, each apiserver, each etcd member with
    the apiserver's client certificate, the gateway's published name) refuses TLS 1.1 from a probe first seen
    speaking TLS 1.1 to a weak loopback server, and negotiates TLS 1.2 (tests/cluster/tls_floor.py). The
    gateway serves a published name on 443 once its route has a backend: each is published for the probe."""
    seen = []
    for site in cfg.sites:
        pki = cluster.site_dir(site, inventory.state_dir(cfg)) / "pki"
        etcd_client = ClientCert(pki / "apiserver-etcd-client.crt", pki / "apiserver-etcd-client.key")
        seen.append(assert_tls_floor(site.ip(site.gateway), 6443))
        for cp in cluster.control_plane(site):
            seen.append(assert_tls_floor(site.ip(cp), 6443))
            seen.append(assert_tls_floor(site.ip(cp), 2379, client_cert=etcd_client))
    sites = runbook.StackSites(lab_outputs)
    (tmp_path / "index.html").write_text("tls floor probe\n")
    published = yaml.safe_load(STACK.read_text())["gateway"]["published_services"]
    assert published, "the lab stack publishes no service: the gateway's 443 would go unprobed"
    for entry in published:
        svc = runbook.Service(entry["name"], entry["hostname"], f"{entry['name']}-data")
        try:
            sites.publish(entry["site"], svc, tmp_path)
            ip = gateway.gateway_ips(cfg, cfg.site(entry["site"]))["internet"]
            seen.append(assert_tls_floor(ip, 443, server_hostname=entry["hostname"]))
        finally:
            sites.unpublish(entry["site"], svc)
    print("\n".join(seen))


def test_privileged_pod_rejected_by_pod_security(cfg, kubeconfigs):
    """SC-K8S-01: with no namespace labels, the cluster default `restricted` rejects a privileged pod."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "priv", "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "registry.invalid/busybox",
                                    "securityContext": {"privileged": True}}]}}
    for site in cfg.sites:
        r = subprocess.run([require_tool("kubectl"), "--kubeconfig", kubeconfigs[site.name], "create",
                            "--dry-run=server", "-f", "-"], input=json.dumps(pod), capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0
        assert 'violates PodSecurity "restricted:latest"' in r.stderr and "privileged" in r.stderr, r.stderr


def test_secret_stored_encrypted_in_etcd(cfg, kubeconfigs):
    """SC-DATA-02: a new secret's raw etcd value is aescbc ciphertext, not the plaintext."""
    site = cfg.primary
    kc = kubeconfigs[site.name]
    name, value = f"enc-{uuid.uuid4().hex[:8]}", f"plain-{uuid.uuid4().hex}"
    r = kubectl(kc, "-n", "default", "create", "secret", "generic", name, f"--from-literal=v={value}")
    assert r.returncode == 0, r.stderr
    try:
        raw = etcdctl(cfg, site, "get", f"/registry/secrets/default/{name}", "--print-value-only")
        assert raw.returncode == 0, raw.stderr
        assert raw.stdout.startswith(b"k8s:enc:aescbc:v1:key1:"), raw.stdout[:40]
        assert value.encode() not in raw.stdout
        got = kubectl(kc, "-n", "default", "get", "secret", name, "-o", "jsonpath={.data.v}")
        assert got.returncode == 0 and got.stdout  # the apiserver decrypts it again
    finally:
        kubectl(kc, "-n", "default", "delete", "secret", name, "--wait=false")


def _cp_status(cfg, site) -> dict[str, bool]:
    return {n.name: podman("inspect", "-f", "{{.State.Running}}", cfg.container(n.name)).strip() == "true"
            for n in cluster.control_plane(site)}


def _etcd_leader(cfg, site, members=None):
    return cluster.etcd_leader(site, members, state_dir=inventory.state_dir(cfg))


# etcd fails a read in flight when its leader changes (ErrLeaderChanged) and the apiserver passes that on;
# a client retries it, as controllers do. It is the one error a read may see while a leader is lost.
LEADER_CHANGED = "etcdserver: leader changed"


def _read_default_namespace(kc: str) -> str | None:
    """None if the API answered the read, else the error."""
    r = kubectl(kc, "get", "namespace", "default", "-o", "name", timeout=15)
    if r.returncode == 0 and r.stdout.strip() == "namespace/default":
        return None
    return r.stderr.strip()[-300:] or f"exit {r.returncode}, stdout {r.stdout!r}"


def test_survives_loss_of_one_control_plane_node(cfg, kubeconfigs):
    """SC-AVL-02: with one control-plane node stopped (the etcd leader's: the hardest loss), the API answers
    through the LB every read, first time or on a retry after etcd's leader change; the LB takes the node out
    and etcd stays healthy with 2/3 and a new leader; after a restart the node rejoins etcd (3/3 healthy) and
    the LB sends traffic to its apiserver again."""
    site = cfg.site("dc-almaty")  # the secondary site: others' tests mostly use the primary
    kc = kubeconfigs[site.name]
    victim = _etcd_leader(cfg, site)
    alive = [n for n in cluster.control_plane(site) if n is not victim]
    assert all(_cp_status(cfg, site).values())
    assert all(cluster.lb_servers(site).values()), cluster.lb_servers(site)
    # An orderly stop (systemd halts the node's services, ~22 s: the apiserver drains first, then etcd hands its
    # leadership over): the stopping apiserver fails its /readyz, the LB takes it out within ~2 s, and it keeps
    # serving meanwhile (kube_apiserver_shutdown_delay). Reads go on from the moment the halt begins.
    halt = threading.Thread(target=podman, args=("stop", "-t", "60", cfg.container(victim.name)),
                            kwargs={"timeout": 90})
    halt.start()
    try:
        answered, tries, t0, failed, retried = 0, 0, time.monotonic(), [], []
        while time.monotonic() < t0 + 40 or halt.is_alive():  # bounded: the halt's 90 s, 40 s of reads at least
            tries += 1
            # A real read, as a client makes it. Not /readyz: a stopping apiserver rightly answers its own
            # /readyz with "shutdown failed" while it still serves requests (CI saw 41/42 that way).
            error = _read_default_namespace(kc)
            if error is not None and LEADER_CHANGED in error:
                retried.append(f"t+{time.monotonic() - t0:.1f}s")
                error = _read_default_namespace(kc)
            if error is None:
                answered += 1
            else:
                failed.append(f"t+{time.monotonic() - t0:.1f}s: {error}")
            time.sleep(0.5)
        halt.join()
        assert answered == tries, f"API answered {answered}/{tries} reads while {victim.name} was lost: {failed}"
        print(f"{tries} reads during the loss of the etcd leader {victim.name}; retried after a leader change: "
              f"{retried or 'none'}")
        assert _etcd_leader(cfg, site, alive) in alive
        servers = cluster.lb_servers(site)
        assert servers == {victim.name: False, **{n.name: True for n in alive}}, servers
        h = etcdctl(cfg, site, "endpoint", "health", members=alive)
        assert h.returncode == 0 and cluster.healthy_members(h) == 2, h.stderr
        name = f"ha-{uuid.uuid4().hex[:6]}"  # writes need quorum: 2/3 must still commit
        assert kubectl(kc, "create", "configmap", name, "-n", "default").returncode == 0
        kubectl(kc, "delete", "configmap", name, "-n", "default", "--wait=false")
    finally:
        halt.join()
        t0 = time.monotonic()
        start_node(cfg.container(victim.name))
        wait_ssh(site.ip(victim), deadline_s=60)
        assert wait_booted(site.ip(victim), deadline_s=60) == "running"
    deadline = t0 + 120
    while time.monotonic() < deadline:  # bounded: the node has 120 s from `podman start` to rejoin
        h = etcdctl(cfg, site, "endpoint", "health")
        servers = cluster.lb_servers(site)
        if h.returncode == 0 and cluster.healthy_members(h) == 3 and all(servers.values()):
            break
        time.sleep(2)
    else:
        pytest.fail(f"{victim.name} did not rejoin within 120s: {h.stderr.decode()} LB={servers}")
    print(f"{victim.name} rejoined etcd and the LB {time.monotonic() - t0:.1f}s after podman start")


@pytest.mark.tools
def test_every_host_playbook_rerun_from_pulumi_changes_nothing(cfg, kubeconfigs):
    """Idempotence of the host-level steps: `pulumi up --replace` of a site's hardening, network and control
    plane Playbook resources runs site.yml, network.yml and cluster.yml again (and so the integrity baseline,
    which follows them), and every host reports changed=0; nothing else changes. One site, the primary (the
    published route is on its gateway): the other runs the same roles with other addresses, and replaying both
    took 13 of CI's minutes on 2 cores."""
    site = cfg.primary
    st = lab_stack(cfg)
    cluster_name = st.outputs()["sites"].value[site.name]["cluster"]
    resources = st.export_stack().deployment["resources"]
    steps = (f"::{site.name}-hardening", f"::{site.name}-network", f"::{cluster_name}-control-plane")
    urns = [r["urn"] for r in resources if r["urn"].endswith(steps)]
    baselines = [r["urn"] for r in resources if r["urn"].endswith(f"::{site.name}-integrity-baseline")]
    assert len(urns) == 3 and len(baselines) == 1, urns + baselines
    events: list = []
    up = st.up(replace=urns, on_event=events.append)
    assert up.summary.result == "succeeded"
    touched = {u: op for u, op in changed_resources(events).items() if "::pulumi:providers:" not in u}
    assert {u for u, op in touched.items() if op not in ("same",)} == {*urns, *baselines}, touched
