"""The sites' networking as `pulumi up` deploys it (playbooks/network.yml) on the default lab: the encrypted
transport between the gateways (SC-NET-02) and the Internet access gateway (SC-NET-01, SC-CRY-01). Every
address comes from the stack's outputs, as an operator would read them; every refusal is shown next to the
same probe succeeding where it should.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from lab import gateway
from lab.nodes import netns
from lab.podman import env

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def net(lab_deployment, lab_outputs):
    cfg = lab_deployment["config"]
    return cfg, lab_outputs["sites"], lab_outputs["transport"]


def sh(container: str, script: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", container, "sh", "-c", script], capture_output=True, text=True,
                          env=env(), check=check, timeout=timeout)


def ifname(container: str, ip: str) -> str:
    for line in netns(container, "ip", "-o", "-4", "addr", "show").stdout.splitlines():
        parts = line.split()
        if parts[3].split("/")[0] == ip:
            return parts[1].split("@")[0]
    raise AssertionError(f"{container}: no interface with {ip}")


def wait_ok(container: str, cmd: str, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while sh(container, cmd).returncode != 0:
        assert time.monotonic() < deadline, f"{container}: `{cmd}` still failing after {deadline_s}s"
        time.sleep(1)


@pytest.mark.control("SC-NET-02")
def test_only_the_tunnel_crosses_between_sites(net):
    """Traffic between sites succeeds and the transport network carries only WireGuard UDP on the tunnel's
    port; the same traffic is plaintext on the site side of the gateway (the control)."""
    cfg, sites, links = net
    astana, almaty = cfg.site("dc-astana"), cfg.site("dc-almaty")
    gw_out = sites["dc-astana"]["gateway"]
    gw = cfg.container(gw_out["node"])
    pcaps = {"transport": "/tmp/sovlab-transport.pcap", "site": "/tmp/sovlab-site.pcap"}
    addresses = {"transport": gw_out["transport_address"], "site": gw_out["address"]}
    caps = []
    for side, pcap in pcaps.items():
        sh(gw, f"rm -f {pcap}")
        cmd = ["podman", "exec", gw, "timeout", "20", "tcpdump", "-i", ifname(gw, addresses[side]), "-n", "-U",
               "--immediate-mode",  # every packet reaches the file as it passes: nothing pending at the stop
               "-w", pcap]
        caps.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env()))
    try:
        for cap in caps:  # tcpdump says "listening on" once it captures: no fixed sleep
            line = cap.stderr.readline().decode()
            assert "listening on" in line, line
        w1 = cfg.container("astana-w1")
        # A recognisable payload ("SECRET!"): it must not appear in clear on the transport network.
        ping = sh(w1, f"ping -c 5 -i 0.2 -p 53454352455421 {almaty.ip('almaty-w1')}")
        assert ping.returncode == 0, ping.stdout + ping.stderr
        http = sh(w1, f"curl -sS -m 10 {sites['dc-almaty']['gateway']['health']}")  # the other site's gateway
        assert http.returncode == 0 and http.stdout.strip() == "ok", http.stderr
    finally:
        sh(gw, "pkill -INT -x tcpdump")
        for cap in caps:
            cap.wait(timeout=30)
    listing = sh(gw, f"tcpdump -n -r {pcaps['transport']}").stdout.splitlines()
    (link,) = links
    port = 51820  # link 0 of the stack's transport (transport.port + 0)
    wg_hosts = {sites[s]["gateway"]["transport_address"] for s in (link["a"], link["b"])}
    # Link-layer housekeeping (ARP, IPv6 neighbour discovery between the two gateways) carries no site data.
    listing = [ln for ln in listing if " ARP, " not in ln and not (" IP6 fe80::" in ln and "ICMP6" in ln)]
    assert len(listing) >= 12, listing  # 5 pings + replies + a TCP exchange, all encapsulated
    for line in listing:
        # e.g. "10:00:00.0 IP 10.210.254.10.51820 > 10.210.254.11.51820: UDP, length 128"
        assert " IP " in line and "UDP" in line, line
        src, dst = line.split(" IP ")[1].split(":")[0].split(" > ")
        assert {src.rsplit(".", 1)[0], dst.rsplit(".", 1)[0]} <= wg_hosts, line
        assert str(port) in (src.rsplit(".", 1)[1], dst.rsplit(".", 1)[1]), line
    raw = {side: subprocess.run(["podman", "exec", gw, "cat", p], capture_output=True, env=env()).stdout
           for side, p in pcaps.items()}
    assert b"SECRET!" in raw["site"] and b"HTTP/1.1" in raw["site"]  # the control: plaintext is detectable
    assert b"SECRET!" not in raw["transport"] and b"HTTP/1.1" not in raw["transport"]
    assert astana.subnet != almaty.subnet


@pytest.mark.control("SC-NET-02")
def test_sites_unreachable_without_the_tunnel(net):
    """With the tunnel down nothing gets through: there is no plaintext path between sites."""
    cfg, sites, _ = net
    gw = cfg.container(sites["dc-astana"]["gateway"]["node"])
    w1 = cfg.container("astana-w1")
    ping = f"ping -c 1 -W 2 {cfg.site('dc-almaty').ip('almaty-w1')}"
    assert sh(w1, ping).returncode == 0
    try:
        sh(gw, "systemctl stop wg-quick@wg0", check=True)
        assert sh(w1, ping.replace("-c 1", "-c 2")).returncode != 0
    finally:
        sh(gw, "systemctl start wg-quick@wg0 nginx", check=True)
    wait_ok(w1, ping)


@pytest.mark.control("SC-NET-01", "SC-NET-02")
def test_nodes_cannot_bypass_the_gateway_even_with_their_own_routes(net):
    """A worker that rewrites its routes still cannot reach the Internet or the other site; with the routes
    the stack gave it, it reaches the other site (the control)."""
    cfg, sites, _ = net
    astana, almaty = cfg.site("dc-astana"), cfg.site("dc-almaty")
    w2 = cfg.container("astana-w2")
    target = almaty.ip("almaty-w1")
    wait_ok(w2, f"ping -c 1 -W 2 {target}")
    repo = gateway.internet_ip(cfg, "repo.internet.lab")
    bypasses = [(str(cfg.internet.subnet), sites["dc-astana"]["gateway"]["address"]),  # gateway must not route out
                (str(cfg.internet.subnet), str(astana.subnet.network_address + 1)),  # nor the host bridge
                (str(almaty.subnet), str(astana.subnet.network_address + 1))]
    try:
        for subnet, via in bypasses:
            netns(w2, "ip", "route", "replace", subnet, "via", via)
            dest = repo if subnet == str(cfg.internet.subnet) else target
            r = sh(w2, f"curl -sS -m 4 -o /dev/null http://{dest}:80/")
            assert r.returncode != 0, (subnet, via)
    finally:
        netns(w2, "ip", "route", "del", str(cfg.internet.subnet), check=False)
        sh(w2, "systemctl restart sovcloud-site-routes", check=True)  # the stack's routes, as at boot
    wait_ok(w2, f"ping -c 1 -W 2 {target}")


@pytest.mark.control("SC-NET-01")
def test_egress_only_through_the_allow_list_proxy(net, lab_outputs):
    """A listed destination through the proxy works; an unlisted one is refused; an address, or going
    direct, does not get out."""
    cfg, sites, _ = net
    allowed = lab_outputs["gateway"]["egress_allow_list"]
    assert allowed == ["repo.internet.lab"]
    repo = gateway.internet_ip(cfg, "repo.internet.lab")
    for name, site in sites.items():
        w = cfg.container(next(n.name for n in cfg.site(name).nodes if n.role == "worker"))
        proxy = site["gateway"]["egress_proxy"]
        ok = sh(w, f"curl -sS -m 10 -x {proxy} http://repo.internet.lab/")
        assert ok.returncode == 0 and ok.stdout.strip() == "repo.internet.lab", ok.stderr
        denied = sh(w, f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}' -x {proxy} http://blocked.internet.lab/")
        assert denied.stdout == "403"
        by_ip = sh(w, f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}' -x {proxy} http://{repo}/")
        assert by_ip.stdout == "403"  # the allow-list is by name; raw addresses do not slip through
        direct = sh(w, f"curl -sS -m 5 http://{repo}/")
        assert direct.returncode != 0 and "repo.internet.lab" not in direct.stdout


@pytest.mark.control("SC-NET-01", "SC-CRY-01")
def test_inbound_only_through_the_reverse_proxy(net):
    """From the Internet only the gateway's nginx answers, and plain HTTP only redirects to TLS (the routes
    themselves are published by the route agent: tests/charts/test_pods.py). SSH answers on the site side
    (the control) but not from the Internet."""
    cfg, sites, _ = net
    inet = cfg.container("inet-repo")
    gw = sites["dc-astana"]["gateway"]
    probe = (f"import http.client as h; c = h.HTTPConnection('{gw['public_address']}', 80, timeout=5); "
             "c.request('GET', '/portal?a=1', headers={'Host': 'egov.gov.kz'}); r = c.getresponse(); "
             "print(r.status, r.getheader('Location'))")
    r = sh(inet, f'python3 -c "{probe}"')
    assert r.stdout.split() == ["308", "https://egov.gov.kz/portal?a=1"], r.stderr
    connect = "python3 -c \"import socket; socket.create_connection(('{}', 22), 3)\""
    assert sh(cfg.container("astana-w1"), connect.format(gw["address"])).returncode == 0
    assert sh(inet, connect.format(gw["public_address"])).returncode != 0


@pytest.mark.control("SC-AVL-01")
def test_each_gateway_health_answers_the_other_site_through_the_tunnel(net):
    """/healthz of every gateway answers the other site's nodes (through the tunnel): what the sites'
    availability probes read."""
    cfg, sites, _ = net
    for name, other in (("dc-astana", "dc-almaty"), ("dc-almaty", "dc-astana")):
        w = cfg.container(next(n.name for n in cfg.site(other).nodes if n.role == "worker"))
        r = sh(w, f"curl -sS -m 10 {sites[name]['gateway']['health']}")
        assert r.returncode == 0 and r.stdout.strip() == "ok", (name, r.stderr)
