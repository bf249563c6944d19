"""An IPsec link of the unified transport network (SC-NET-02), end to end on two lab nodes of its own.

Two standalone nodes, ipx-a and ipx-b, are the gateways of two sites joined by a `tunnel: ipsec` link. Their
variables are what the product computes: a stack config with those two sites is given to TransportNetwork
(infra/components.py) under Pulumi mocks whose only stand-in is the resource engine (the link's pre-shared key
comes from the real SecretKey provider), and the inventory is the product's (ansible_inventory of the sites),
with the nodes' management address as ansible_host. playbooks/network.yml then runs once per site, as the
site's `<site>-network` Playbook resource runs it (--limit the site, -e its variables), but without the
Internet access gateway's tasks (SC-NET-01, SC-CRY-01): those need a public interface and published
certificates that these nodes do not model; the transport role and its dependencies run in full.

Stand-ins built by the test inside each node (NET_ADMIN; this kernel has no dummy interfaces): a veth pair
holding the gateway's site address (the site network) and a VXLAN over the nodes' own network holding its
transport_address (the transport network, kept apart from the management network that Ansible uses, since the
role's firewall closes the transport interface to everything but the tunnels). The nodes get /dev/net/tun, as
the lab's own gateways do (lab/gateway.py): userspace IPsec, like userspace WireGuard, runs over a TUN device.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pulumi
import pytest
import yaml

from infra import components, providers
from infra import config as cfg
from infra.providers import SecretKeyProvider, changed_tasks
from lab import standalone as ls
from lab.nodes import STANDALONE_NET, STANDALONE_SUBNET, container_ip, ensure_network, run_node, wait_booted, wait_ssh
from lab.podman import env

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
NETWORK = ROOT / "playbooks" / "network.yml"
# site -> (gateway node, site subnet, transport address). Test-only ranges, routed nowhere on this machine.
SITES = {"dc-ipx-a": ("ipx-a", "10.231.1.0/24", "10.231.0.1"),
         "dc-ipx-b": ("ipx-b", "10.231.2.0/24", "10.231.0.2")}
TRANSPORT_PREFIX = 24
VXLAN_ID = 231


@pytest.fixture(autouse=True)
def _lab_is_up_for_lab_tests():
    """Overrides tests/conftest.py's fixture of that name for this module, as tests/playbooks/conftest.py does for
    the hardening test: these nodes are the test's own, and the shared default lab is neither brought up nor
    taken down by it."""
    yield


def stack_cloud() -> cfg.Cloud:
    """A stack config with the two sites and their IPsec link, validated like any stack's."""
    return cfg.parse({
        "sites": [{"name": site, "city": site, "country": "KZ", "racks": ["r1"], "subnet": subnet,
                   "nodes": [{"name": node, "role": "gateway", "rack": "r1", "transport_address": transport,
                              "public_address": f"203.0.113.{i + 1}"}]}
                  for i, (site, (node, subnet, transport)) in enumerate(SITES.items())],
        "transport": {"address_plan": "10.231.255.0/24", "links": [{"a": "dc-ipx-a", "b": "dc-ipx-b",
                                                                       "tunnel": "ipsec"}]},
    })


class _Mocks(pulumi.runtime.Mocks):
    """The engine's stand-in: resources echo their inputs, except the link's pre-shared key, which the product's
    own SecretKey provider generates (the IPsec daemons use it for real). Nothing else is expected."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ.startswith("pulumi-python:dynamic"):
            assert args.typ.endswith(":SecretKey"), f"unexpected resource {args.name} for an IPsec link: {args.typ}"
            outputs = SecretKeyProvider().create(outputs).outs
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def product_site_vars(cloud: cfg.Cloud, files_dir: Path) -> tuple[dict, dict[str, tuple[dict, dict]]]:
    """(the stack's Ansible inventory, {site: (network.yml variables, secret files)}) from the components."""
    result: dict = {}
    pulumi.runtime.set_mocks(_Mocks(), preview=False)

    @pulumi.runtime.test
    def build():
        sites = {s.name: components.Site(s) for s in cloud.sites}
        result["inventory"] = components.ansible_inventory(sites)
        transport = components.TransportNetwork("transport", cloud.transport, sites)
        outs = []
        for name in sites:
            variables, files = transport.site_vars(name, str(files_dir))
            outs.append(pulumi.Output.all(variables, files).apply(
                lambda vf, name=name: result.__setitem__(name, (vf[0], dict(vf[1])))))
        return pulumi.Output.all(*outs)

    build()
    return result.pop("inventory"), result


def sh(name: str, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", f"sovlab-sa-{name}", "sh", "-c", script], capture_output=True,
                          text=True, env=env(), timeout=timeout)


def must(name: str, script: str, timeout: float = 120) -> str:
    r = sh(name, script, timeout)
    assert r.returncode == 0, f"{name}: `{script}` failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def start_gateway(name: str) -> str:
    """lab.standalone.start_node's node (standalone network, NET_ADMIN) with /dev/net/tun, as lab/gateway.py gives
    the lab's gateways; removed with lab.standalone.remove_node."""
    ensure_network(STANDALONE_NET, STANDALONE_SUBNET, labels={"sovcloud.lab.kind": "standalone"})
    container = f"sovlab-sa-{name}"
    run_node(container, name, [(STANDALONE_NET, None)], 512, {"role": "standalone", "node": name},
             ["--cap-add", "NET_ADMIN", "--device", "/dev/net/tun"])
    ip = container_ip(container, STANDALONE_NET)
    wait_ssh(ip)
    wait_booted(ip)
    return ip


def kernel_does_esp() -> bool:
    """What the nodes' (this machine's) kernel was built with: ESP and the GCM AEAD the tunnels use."""
    path = Path("/proc/config.gz")
    if not path.exists():
        pytest.fail("/proc/config.gz is missing: the test cannot tell which IPsec backend the role must choose")
    config = gzip.decompress(path.read_bytes()).decode()
    return all(re.search(rf"^CONFIG_{opt}=[ym]$", config, re.M) for opt in ("INET_ESP", "CRYPTO_GCM"))


def sas(name: str) -> tuple[list[str], list[dict[str, str]]]:
    """(IKE SA states, CHILD_SAs as key -> value) from `swanctl --list-sas --raw`."""
    raw = must(name, "swanctl --list-sas --raw")
    ike = re.findall(r"\bversion=2 state=(\w+)", raw)
    children = [dict(re.findall(r"([\w-]+)=(\[[^\]]*\]|\S+)", body))
                for body in re.findall(r"\{([^{}]*\breqid=[^{}]*)\}", raw)]
    return ike, children


def installed(name: str) -> list[dict[str, str]]:
    ike, children = sas(name)
    if "ESTABLISHED" not in ike:
        return []
    return [c for c in children if c.get("state") == "INSTALLED"]


def packets(name: str) -> tuple[int, int]:
    """(packets in, packets out) over the node's installed CHILD_SAs."""
    children = installed(name)
    return sum(int(c["packets-in"]) for c in children), sum(int(c["packets-out"]) for c in children)


def nft_counter(name: str, chain: str, pattern: str) -> int:
    """Packets counted by the rule of `chain` (table inet sovcloud_transport) matching `pattern`."""
    text = must(name, f"nft list chain inet sovcloud_transport {chain}")
    rules = [ln for ln in text.splitlines() if re.search(pattern, ln)]
    assert len(rules) == 1, f"{name}: one rule of chain {chain} should match {pattern!r}:\n{text}"
    return int(re.search(r"counter packets (\d+)", rules[0]).group(1))


@pytest.fixture(scope="module")
def gateways(tmp_path_factory):
    work = tmp_path_factory.mktemp("ipsec")
    cloud = stack_cloud()
    files_dir = work / "state"
    inventory, site_vars = product_site_vars(cloud, files_dir)
    repo = ls.ensure_offline_repo()
    nodes = {node: site for site, (node, _, _) in SITES.items()}
    try:
        for node in nodes:
            ls.remove_node(node)  # fresh nodes, never a container left by an earlier run
        ips = {node: start_gateway(node) for node in nodes}
        yield work, cloud, inventory, site_vars, ips, repo
    finally:
        for node in nodes:
            ls.remove_node(node)


def build_stand_ins(ips: dict[str, str]) -> None:
    """Each node's site network (a veth holding the gateway's site address) and the transport network (a VXLAN
    between the two nodes holding their transport addresses)."""
    cloud = stack_cloud()
    for site, (node, _subnet, transport) in SITES.items():
        peer = next(n for s, (n, _, _) in SITES.items() if s != site)
        s = cloud.site(site)
        site_address = components.node_address(s, s.gateway)
        dev = must(node, f"ip -o -4 addr show | awk '$4 ~ /^{re.escape(ips[node])}\\//{{print $2}}'").strip()
        assert dev, f"{node}: no interface with {ips[node]}"
        must(node, f"ip link add tr0 type vxlan id {VXLAN_ID} dstport 4789 local {ips[node]} remote {ips[peer]} "
                   f"dev {dev} && ip addr add {transport}/{TRANSPORT_PREFIX} dev tr0 && ip link set tr0 up && "
                   f"ip link add site0 type veth peer name site0-lan && "
                   f"ip addr add {site_address}/{s.subnet.prefixlen} dev site0 && "
                   f"ip link set site0-lan up && ip link set site0 up")


def run_network(inventory: Path, variables: Path, limit: str) -> tuple[providers.PlaybookRun, dict]:
    r = providers.run_playbook(NETWORK, inventory, extra_vars_file=variables, limit=limit, timeout=900,
                               extra_args=["--skip-tags", "SC-NET-01,SC-CRY-01"])
    return r, r.recap


def run_both(inventory: Path, var_files: dict[str, Path]) -> dict[str, tuple[providers.PlaybookRun, dict]]:
    """Both sites' network playbooks at once, as `pulumi up` runs the two sites' independent resources."""
    groups = {site: site.replace("-", "_") for site in var_files}
    with ThreadPoolExecutor(len(var_files)) as pool:
        futures = {site: pool.submit(run_network, inventory, path, groups[site]) for site, path in var_files.items()}
        return {site: f.result() for site, f in futures.items()}


def wait_for(what: str, probe, deadline_s: float = 90):
    end = time.monotonic() + deadline_s
    while not (value := probe()):
        assert time.monotonic() < end, f"{what}: not after {deadline_s}s"
        time.sleep(2)
    return value


@pytest.mark.control("SC-NET-02")
def test_ipsec_link_between_two_sites(gateways):
    t0 = time.monotonic()
    work, cloud, inventory, site_vars, ips, repo = gateways
    addr = {site: components.node_address(cloud.site(site), cloud.site(site).gateway) for site in SITES}
    a, b = (SITES[s][0] for s in SITES)
    site_a, site_b = SITES

    # The product's variables, as TransportNetwork hands them to the site's network Playbook.
    for site, (variables, files) in site_vars.items():
        (tunnel,) = variables["transport_tunnels"]
        assert (variables["transport_gateway"], tunnel["tunnel"], tunnel["interface"]) == (SITES[site][0], "ipsec",
                                                                                           "ipsec0")
        assert set(files) == {f"{site}/transport/ipsec0.key"} and tunnel["key_file"] == f"{work}/state/{site}" \
            "/transport/ipsec0.key"
        for rel, content in files.items():
            path = work / "state" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            path.chmod(0o600)
    assert site_vars[site_a][1] == {k.replace(site_b, site_a): v for k, v in site_vars[site_b][1].items()}, \
        "both ends of the link must hold the same pre-shared key"
    var_files = {}
    for site, (variables, _) in site_vars.items():
        var_files[site] = work / f"{site}.vars.yml"
        var_files[site].write_text(yaml.safe_dump({**variables, "network_files_dir": str(work / "state")}))
    base = yaml.safe_load(ls.write_inventory(work / "base.yml", {n: (ip, "gateway") for n, ip in ips.items()},
                                             repo).read_text())
    inventory["all"]["vars"] = base["all"]["vars"]
    for site_group in (g for g in inventory["all"]["children"].values() if "vars" in g):
        for node, host in site_group["hosts"].items():
            host["ansible_host"] = ips[node]  # the management address (the site address is on the stand-in)
    inv = work / "inventory.yml"
    inv.write_text(yaml.safe_dump(inventory, sort_keys=False))

    build_stand_ins(ips)
    transport = {site: SITES[site][2] for site in SITES}
    # Before: the transport network joins the gateways, but nothing carries site A to site B.
    must(a, f"ping -c 2 -W 2 {transport[site_b]}")
    before = sh(a, f"ping -c 2 -W 1 -I {addr[site_a]} {addr[site_b]}")
    assert before.returncode != 0, f"site B reachable from site A before any tunnel:\n{before.stdout}"

    runs = run_both(inv, var_files)
    for site, (r, recap) in runs.items():
        assert r.returncode == 0, f"{site}:\n{r.stdout[-6000:]}\n{r.stderr[-2000:]}"
        node = SITES[site][0]
        assert set(recap) == {node} and recap[node]["changed"] > 0 and recap[node]["failed"] == 0, recap

    # The IKE SA is up and its CHILD_SA installed at both ends (the initiator keeps trying until its peer is up).
    for node in (a, b):
        wait_for(f"{node}: an ESTABLISHED IKE SA with an INSTALLED CHILD_SA", lambda node=node: installed(node),
                 deadline_s=180)
    for node in (a, b):
        children = installed(node)
        assert {c["name"] for c in children} == {"sovcloud-ipsec0"}, children

    # The backend is the one this kernel allows: userspace (kernel-libipsec, ESP in UDP) where it has no ESP.
    userspace = not kernel_does_esp()
    for node in (a, b):
        stats = must(node, "swanctl --stats")
        assert ("kernel-libipsec" in stats) == userspace, stats
        xfrm = must(node, "ip xfrm state list")
        if userspace:
            assert xfrm.strip() == "", f"{node}: the kernel holds SAs it cannot use:\n{xfrm}"
            assert all(c.get("encap") == "yes" for c in installed(node)), installed(node)
            assert re.search(r"\bipsec\d+:.*\bUP\b", must(node, "ip -o link show")), "no libipsec TUN device"
        else:
            assert "proto esp" in xfrm, f"{node}: no ESP SA in the kernel:\n{xfrm}"

    # Site A reaches site B now, through the CHILD_SA: its counters at both ends grow by at least the pings.
    count = 5
    esp_in_b = nft_counter(b, "input", r"udp dport \{ 500, 4500 \}")
    pa, pb = packets(a), packets(b)
    ping = sh(a, f"ping -c {count} -i 0.2 -W 2 -I {addr[site_a]} {addr[site_b]}")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    pa2, pb2 = packets(a), packets(b)
    assert pa2[1] - pa[1] >= count and pb2[0] - pb[0] >= count, (pa, pa2, pb, pb2)  # requests A -> B
    assert pb2[1] - pb[1] >= count and pa2[0] - pa[0] >= count, (pa, pa2, pb, pb2)  # replies B -> A
    # ... and what crossed the transport network was the tunnel's UDP, admitted by the transport firewall.
    assert nft_counter(b, "input", r"udp dport \{ 500, 4500 \}") - esp_in_b >= count

    # The transport firewall is loaded and closes the transport interface to all else: the ping between the
    # transport addresses that passed before the playbook is dropped now, and counted.
    for node in (a, b):
        table = must(node, "nft list table inet sovcloud_transport")
        assert 'iifname "tr0"' in table and "udp dport { 500, 4500 }" in table, table
        assert must(node, "systemctl is-active sovcloud-nft@transport.service").strip() == "active"
    closed = r'^\s*oifname "tr0" counter packets \d+ bytes \d+ drop'
    dropped = nft_counter(a, "output", closed)
    refused = sh(a, f"ping -c 2 -W 1 {transport[site_b]}")
    assert refused.returncode != 0, refused.stdout
    assert nft_counter(a, "output", closed) - dropped >= 2

    # A second run changes nothing at either site.
    again = run_both(inv, var_files)
    for site, (r, recap) in again.items():
        node = SITES[site][0]
        assert r.returncode == 0, f"{site}:\n{r.stdout[-6000:]}\n{r.stderr[-2000:]}"
        assert recap[node]["changed"] == 0, f"{site} not idempotent: {changed_tasks(r.stdout)}\n{r.stdout[-4000:]}"
    assert installed(a) and installed(b), "the second run broke the link"
    print(f"ipsec lab test: {time.monotonic() - t0:.0f}s after the nodes were up")
