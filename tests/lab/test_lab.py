"""The podman lab, for real: the hardware only (nodes, ssh, S3, networks), idempotence, teardown. What runs on
the nodes (transport, gateway, clusters) is the stack's, tested on the deployed default lab (tests/network, ...).

All tests share one lab (api.up is idempotent, so each test may ask for it); teardown runs last.
It is a separate instance (`sovlabt`, 10.219.x) of the shipped topology, so these tests never disturb the
default `sovlab` lab that other areas' tests and playbooks use at the same time.
"""

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
import yaml

from common.wait import until
from lab import api, s3
from lab.config import parse, raw
from lab.inventory import state_dir
from lab.nodes import ensure_network, remove_standalone, run_standalone, ssh, ssh_args
from lab.podman import LABEL, env, podman, podman_json, process_alive
from tests.conftest import require_tool

pytestmark = pytest.mark.lab

def _test_topology() -> dict:
    data = raw()
    data["name"] = "sovlabt"
    for sect in [data["internet"], data["transport"], *data["sites"]]:
        sect["subnet"] = sect["subnet"].replace("10.210.", "10.219.")
    return data


TOPOLOGY = _test_topology()
CFG = parse(TOPOLOGY, "test topology")
INSTANCE = [f"label={LABEL}", f"label=sovcloud.lab.instance={CFG.name}"]
ASTANA, ALMATY = CFG.site("dc-astana"), CFG.site("dc-almaty")
NODES = [(s, n) for s in CFG.sites for n in s.nodes]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lab") / "lab.yaml"
    path.write_text(yaml.safe_dump(TOPOLOGY))
    return str(path)


@pytest.fixture(scope="module")
def lab():
    for tool in ("podman", "iptables", "ssh", "nsenter"):
        require_tool(tool)
    return api.up(CFG)  # the hardware layer; the control planes on top are tested in their own area


def _ids() -> dict[str, str]:
    args = [x for f in INSTANCE for x in ("--filter", f)]
    return {c["Names"][0]: c["Id"] for c in podman_json("ps", "-a", *args, "--format", "json")}


def sh(container: str, script: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", container, "sh", "-c", script], capture_output=True, text=True,
                          env=env(), check=check, timeout=120)


def test_every_node_boots_systemd_to_running(lab):
    # `running`, not `degraded`: the image masks what cannot work in a container, so a failed unit is a fault.
    assert lab["systemd"] == {n.name: "running" for _, n in NODES}


def test_ssh_with_lab_key_on_every_node_and_labels(lab):
    for site, n in NODES:
        r = ssh(site.ip(n), "hostname && sudo -n true && echo sudo-ok")
        assert r.returncode == 0, (n.name, r.stderr)
        assert r.stdout.split() == [n.name, "sudo-ok"]
        labels = podman_json("container", "inspect", CFG.container(n.name))[0]["Config"]["Labels"]
        assert labels["sovcloud.lab"] == "1"
        assert (labels["sovcloud.lab.site"], labels["sovcloud.lab.rack"], labels["sovcloud.lab.role"]) == (
            site.name, n.rack, n.role)


def test_cli_ssh_runs_on_the_named_node(lab, config_file):
    cli = [sys.executable, "-m", "lab", "--config", config_file]
    r = subprocess.run([*cli, "ssh", "almaty-cp2", "hostname"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "almaty-cp2", r.stderr


def test_ssh_refuses_passwords_and_root(lab):
    """SC-HST-01: keys only; root cannot log in."""
    ip = ASTANA.ip("astana-cp1")
    base = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "ConnectTimeout=5",
            "-o", "UserKnownHostsFile=/dev/null"]
    r = subprocess.run([*base, "-o", "PubkeyAuthentication=no", f"sovadmin@{ip}", "true"],
                       capture_output=True, text=True)
    # The server offers no password/keyboard-interactive method at all.
    assert r.returncode == 255 and "Permission denied (publickey)" in r.stderr, r.stderr
    r = subprocess.run([*ssh_args(ip)[:-1], f"root@{ip}", "true"], capture_output=True, text=True)
    assert r.returncode == 255


def test_status_healthy_and_cli_table(lab, config_file):
    rows = api.hardware_status(CFG)
    assert len(rows) == len(NODES) + len(CFG.sites)
    assert all(r["healthy"] for r in rows), [r for r in rows if not r["healthy"]]
    assert all(r["ssh"] for r in rows if r["role"] != "s3")
    cli = [sys.executable, "-m", "lab", "--config", config_file]
    out = subprocess.run([*cli, "status"], capture_output=True, text=True, timeout=120)
    table = {line.split()[1]: line.split() for line in out.stdout.splitlines()[1:]}
    for site, n in NODES:
        # site node role rack ip container ssh systemd healthy
        assert table[n.name] == [site.name, n.name, n.role, n.rack, site.ip(n), "running", "True", "running",
                                 "True"], out.stdout


def test_inventory_reaches_every_node_with_ansible(lab):
    require_tool("ansible")
    r = subprocess.run(["ansible", "-i", lab["inventory"], "all", "-m", "ping", "-f", "6"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(NODES)
    groups = subprocess.run(["ansible-inventory", "-i", lab["inventory"], "--graph", "dc_almaty"],
                            capture_output=True, text=True, timeout=120).stdout
    assert "almaty-gw" in groups and "astana-gw" not in groups


def test_s3_endpoint_per_site(lab):
    """SC-DATA-01: each site has its own object store; an object written at one is absent at the other."""
    run = uuid.uuid4().hex[:8]
    clients = {s.name: s3.client(s) for s in CFG.sites}
    for name, c in clients.items():
        c.head_bucket(Bucket=s3.BUCKET)  # made by `lab up`
        c.put_object(Bucket=s3.BUCKET, Key=f"probe/{run}/{name}", Body=name.encode())
        assert c.get_object(Bucket=s3.BUCKET, Key=f"probe/{run}/{name}")["Body"].read() == name.encode()
    listed = clients["dc-almaty"].list_objects_v2(Bucket=s3.BUCKET, Prefix=f"probe/{run}/")["Contents"]
    assert [o["Key"] for o in listed] == [f"probe/{run}/dc-almaty"]

def test_the_lab_configures_nothing_on_its_nodes(lab):
    """The lab is hardware: after `lab up` a gateway is wired to its three networks with a router's
    capabilities, but runs no tunnel, firewall or proxy and has none installed (the stack's network playbook
    brings them), and no node has a route to another site. The control: the gateway really is on all three
    networks, and its site's nodes reach it."""
    gw = CFG.container(ASTANA.gateway.name)
    addrs = sh(gw, "ip -o -4 addr show").stdout
    for net in (ASTANA.subnet, CFG.transport.subnet, CFG.internet.subnet):
        assert f" {str(net.network_address).rsplit('.', 1)[0]}." in addrs, (net, addrs)
    assert sh(CFG.container("astana-w1"), f"ping -c 1 -W 2 {ASTANA.ip(ASTANA.gateway)}").returncode == 0
    for package in ("nginx-light", "tinyproxy", "wireguard-tools", "haproxy"):
        r = sh(gw, f"dpkg-query -W -f='${{Status}}' {package}")
        assert "install ok installed" not in r.stdout, f"{package} is on a gateway the stack never configured"
    tables = sh(gw, "nft list tables").stdout
    assert "sovcloud" not in tables, tables
    for site in CFG.sites:
        for n in site.nodes:
            routes = sh(CFG.container(n.name), "ip -4 route show").stdout
            others = [str(o.subnet) for o in CFG.sites if o is not site]
            assert not any(o in routes for o in others), (n.name, routes)


def test_standalone_node_for_playbook_tests(lab):
    ip, key = run_standalone("sovt-sa1")
    try:
        assert key.exists() and key.with_suffix(".pub").exists()
        r = ssh(ip, "hostname && systemctl is-system-running && sudo -n python3 -c 'print(42)'")
        assert r.stdout.split() == ["sovt-sa1", "running", "42"], r.stderr
    finally:
        remove_standalone("sovt-sa1")
    assert subprocess.run(["podman", "container", "exists", "sovlab-sa-sovt-sa1"], env=env()).returncode == 1


def test_ensure_network_is_safe_to_call_concurrently():
    # Nodes are started from a thread pool and each makes sure its network exists (the hardening bench
    # once died on "network already exists" from the loser of that race).
    from concurrent.futures import ThreadPoolExecutor

    name = f"sovtest-race-{uuid.uuid4().hex[:6]}"
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda _: ensure_network(name, "10.219.253.0/24"), range(4)))
        assert [s["subnet"] for s in podman_json("network", "inspect", name)[0]["subnets"]] == ["10.219.253.0/24"]
    finally:
        podman("network", "rm", "-f", name, check=False)


def test_up_recreates_a_node_whose_processes_died_behind_podmans_back(lab):
    # What a sandbox/VM restart that keeps /run leaves: conmon and the node's PID 1 killed, so podman never
    # records the exit and still reports "running". `up` must recreate such a node, not reuse it.
    node = ALMATY.nodes[-1]
    container = CFG.container(node.name)
    state = podman_json("container", "inspect", container)[0]["State"]
    os.kill(state["ConmonPid"], signal.SIGKILL)
    os.kill(state["Pid"], signal.SIGKILL)
    until(lambda: not process_alive(state["ConmonPid"]) and not process_alive(state["Pid"]), seconds=30, every=0.1,
          what="the node's conmon and PID 1 gone")
    assert podman_json("container", "inspect", container)[0]["State"]["Status"] == "running"  # the stale record
    row = next(r for r in api.hardware_status(CFG) if r["node"] == node.name)
    assert (row["container"], row["healthy"]) == ("stale", False)
    api.up(CFG)
    row = next(r for r in api.hardware_status(CFG) if r["node"] == node.name)
    assert (row["container"], row["systemd"], row["healthy"]) == ("running", "running", True)


def test_up_is_idempotent(lab):
    before = _ids()
    again = api.up(CFG)
    assert _ids() == before  # nothing recreated
    assert again["systemd"] == lab["systemd"]


def test_zz_down_removes_everything_it_created_and_nothing_else(lab):
    image = lab["image"]
    # Every process the lab ran lives in its containers: remember their PID 1s to check they are gone.
    pids = [podman_json("container", "inspect", n)[0]["State"]["Pid"] for n in _ids()]
    assert len(pids) == len(NODES) + 2 * len(CFG.sites) and all(pids)
    decoy_net, decoy = "sovtest-decoy-net", "sovtest-decoy"
    subprocess.run(["podman", "network", "create", "--subnet", "10.210.251.0/24", decoy_net], env=env(),
                   check=True, capture_output=True)
    subprocess.run(["podman", "create", "--name", decoy, "--network", decoy_net, image, "true"], env=env(),
                   check=True, capture_output=True)
    run_standalone("sovt-keep")  # not made by `up`: `down` must leave it (others' playbook tests use these)
    try:
        result = api.down(CFG)
        assert result["containers"] >= len(NODES) + 2 * len(CFG.sites)
        assert _ids() == {}
        assert podman("network", "ls", "-q", *[x for f in INSTANCE for x in ("--filter", f)]).split() == []
        names = {n["name"] for n in json.loads(podman("network", "ls", "--format", "json"))}
        assert not any(n.startswith(CFG.name + "-") for n in names)
        assert decoy_net in names
        for kept in (decoy, "sovlab-sa-sovt-keep"):
            assert subprocess.run(["podman", "container", "exists", kept], env=env()).returncode == 0, kept
        assert not state_dir(CFG).exists()
        alive = [p for p in pids if process_alive(p)]  # an exited PID 1 left unreaped is no process running
        assert alive == [], "processes of removed containers still run"
    finally:
        remove_standalone("sovt-keep")
        subprocess.run(["podman", "rm", "-f", decoy], env=env(), capture_output=True)
        subprocess.run(["podman", "network", "rm", decoy_net], env=env(), capture_output=True)
