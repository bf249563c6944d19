"""Network audit checks: no node has a way around its site's gateway (SC-NET-01), and a gateway's transport
network carries nothing but its encrypted tunnels, which are up (SC-NET-02). They read the live state: routes,
the loaded nftables tables, the tunnels' handshakes."""

from __future__ import annotations

import re
import time

import pytest

from tests.audit.facts import inventory_var

# A WireGuard peer that has not completed a handshake for this long is down (keepalives every 25 s, rekey 120 s).
HANDSHAKE_MAX_AGE_S = 180


def nft_chain(host, table: str, chain: str, evidence: list[str]) -> str:
    r = host.run(f"nft list chain inet {table} {chain}")
    evidence.append(f"$ nft list chain inet {table} {chain} -> rc={r.rc}\n{r.stdout.strip()[:1200]}")
    assert r.rc == 0, f"table inet {table} (chain {chain}) is not loaded: {r.stderr.strip()}"
    return r.stdout


@pytest.mark.control("SC-NET-01")
def test_SC_NET_01_no_route_around_the_gateway(host, node_role, evidence):
    default = host.run("ip -4 route show default")
    evidence.append(f"$ ip -4 route show default\n{default.stdout.strip() or '(none)'}")
    assert default.rc == 0 and default.stdout.strip() == "", "a default route leads around the gateway"
    if node_role != "gateway" or inventory_var(host, "public_address") is None:
        return
    # The gateway forwards nothing but its site <-> the other sites (through the tunnels).
    forward = nft_chain(host, "sovcloud_gateway", "forward", evidence)
    assert re.search(r"hook forward priority filter - 1; policy drop;", forward), forward
    inbound = nft_chain(host, "sovcloud_gateway", "input", evidence)
    assert re.search(r'tcp dport \{ 80, 443 \} .*accept', inbound) and re.search(r"counter .*drop", inbound)


@pytest.mark.control("SC-NET-02")
def test_SC_NET_02_transport_carries_only_the_tunnels(host, node_role, evidence):
    if node_role != "gateway":
        pytest.skip(f"not applicable to role {node_role}")
    if inventory_var(host, "transport_address") is None:
        pytest.skip("not applicable: this gateway ends no transport link (no transport_address)")
    text = nft_chain(host, "sovcloud_transport", "input", evidence)
    out = nft_chain(host, "sovcloud_transport", "output", evidence)
    iface = re.search(r'iifname "([^"]+)" counter .*drop', text)
    assert iface, "the transport interface is not closed to everything but the tunnels"
    assert re.search(rf'oifname "{re.escape(iface.group(1))}" counter .*drop', out), out
    allowed = re.findall(r"dport (\{[^}]*\}|\d+) counter .*accept", text)
    evidence.append(f"tunnel ports admitted on {iface.group(1)}: {allowed}")
    assert allowed, "no tunnel is admitted on the transport network"
    # Each WireGuard peer has shaken hands recently: the encrypted tunnel is what carries the sites' traffic.
    dump = host.run("wg show all latest-handshakes")
    evidence.append(f"$ wg show all latest-handshakes\n{dump.stdout.strip()}")
    if dump.rc == 0 and dump.stdout.strip():
        now = time.time()
        stale = [ln for ln in dump.stdout.splitlines() if now - int(ln.split()[-1]) > HANDSHAKE_MAX_AGE_S]
        assert not stale, f"tunnel peers without a handshake for {HANDSHAKE_MAX_AGE_S}s: {stale}"
    else:
        sas = host.run("swanctl --list-sas --raw")
        evidence.append(f"$ swanctl --list-sas\n{sas.stdout.strip()[:600]}")
        assert sas.rc == 0 and "ESTABLISHED" in sas.stdout, "no WireGuard peer and no established IPsec SA"


def _interface_of(host, address: str, evidence: list[str]) -> str:
    r = host.run("ip -o -4 addr show")
    name = next((ln.split()[1] for ln in r.stdout.splitlines() if f" {address}/" in ln), None)
    evidence.append(f"{address} is on {name}")
    assert name, f"no interface holds {address}:\n{r.stdout}"
    return name


@pytest.mark.control("SC-NET-08")
def test_SC_NET_08_internet_never_forwarded_to_the_transport_network(host, node_role, evidence):
    if node_role != "gateway":
        pytest.skip(f"not applicable to role {node_role}")
    public, transport = inventory_var(host, "public_address"), inventory_var(host, "transport_address")
    if public is None or transport is None:
        pytest.skip("not applicable: this gateway joins the Internet and the transport network not both")
    public_if, transport_if = _interface_of(host, public, evidence), _interface_of(host, transport, evidence)
    tunnels = host.run("wg show interfaces").stdout.split()
    forward = nft_chain(host, "sovcloud_gateway", "forward", evidence)
    assert re.search(r"hook forward priority filter - 1; policy drop;", forward), "forwarding is not default-deny"
    accepts = [ln.strip() for ln in forward.splitlines() if re.search(r"\baccept\b", ln)]
    # Every packet forwarded enters or leaves by the site's own interface: nothing crosses between the Internet and
    # the transport network (or its tunnels), in either direction.
    sides = [set(re.findall(r'[io]ifname "([^"]+)"', ln)) for ln in accepts]
    site_ifs = set.intersection(*sides) if sides else set()
    evidence.append(f"Internet {public_if}, transport {transport_if}, tunnels {tunnels}, forwarded only through "
                    f"{sorted(site_ifs) or 'nothing'}")
    assert all(sides) and site_ifs, f"a forward rule accepts without naming the site's interface: {accepts}"
    outside = {public_if, transport_if, *tunnels}
    assert not site_ifs & outside, f"forwarding is anchored on an outside interface: {site_ifs & outside}"
    assert not [ln for ln in accepts if public_if in re.findall(r'[io]ifname "([^"]+)"', ln)], accepts
