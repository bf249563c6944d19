"""The gateways' allow-list resolver (playbooks/roles/internet_gateway, templates/Corefile.j2) run for real:
the role's Corefile, rendered as Ansible renders it, served by the CoreDNS binary `make setup` builds, on
loopback. Both names exist in its hosts file; only the allowed one resolves. That the deployed gateways and the
clusters' DNS behave so is tests/cluster/test_services_lab.py's."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import time

import jinja2
import pytest

from tests.conftest import require_tool
from toolchain import REPO

pytestmark = pytest.mark.tools

TEMPLATE = REPO / "playbooks" / "roles" / "internet_gateway" / "templates" / "Corefile.j2"
RCODES = {0: "NOERROR", 3: "NXDOMAIN", 5: "REFUSED"}


def query(port: int, name: str) -> tuple[str, list[str]]:
    """One A query over UDP: (rcode, the answers' addresses)."""
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", 0x5ec0, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(packet, ("127.0.0.1", port))
        data = s.recv(4096)
    flags, _, answers = struct.unpack(">HHH", data[2:8])
    addresses, pos = [], 12 + len(qname) + 4
    for _ in range(answers):  # each answer: its name (labels, or a pointer), type, class, ttl, length, data
        while data[pos] and data[pos] < 0xC0:
            pos += 1 + data[pos]
        pos += 2 if data[pos] >= 0xC0 else 1
        rtype, _, _, length = struct.unpack(">HHIH", data[pos:pos + 10])
        if rtype == 1:
            addresses.append(socket.inet_ntoa(data[pos + 10:pos + 10 + length]))
        pos += 10 + length
    return RCODES.get(flags & 0xF, str(flags & 0xF)), addresses


@pytest.fixture
def resolver(tmp_path):
    coredns = require_tool("coredns")
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.10 repo.internet.lab\n192.0.2.11 blocked.internet.lab\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 (a Corefile, no HTML)
    env.filters["regex_escape"] = re.escape
    corefile = env.from_string(TEMPLATE.read_text()).render(
        ansible_managed="test", site="dc-test", ansible_host="127.0.0.1", internet_gateway_dns_port=port,
        internet_gateway_allowed_egress=["repo.internet.lab"], internet_gateway_dns_hosts_file=str(hosts))
    # The gateway's upstream is not the test machine's: an empty resolv.conf-like upstream list.
    corefile = corefile.replace("forward . /etc/resolv.conf", "forward . 127.0.0.1:9")
    (tmp_path / "Corefile").write_text(corefile)
    proc = subprocess.Popen([coredns, "-conf", str(tmp_path / "Corefile")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                query(port, "repo.internet.lab")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.control("SC-NET-01")
def test_only_allowed_names_resolve(resolver):
    assert query(resolver, "repo.internet.lab") == ("NOERROR", ["192.0.2.10"])  # the control: it resolves
    # In the same hosts file, not on the allow-list: no such name, nor an allowed name's subdomains.
    assert query(resolver, "blocked.internet.lab") == ("NXDOMAIN", [])
    assert query(resolver, "x.repo.internet.lab") == ("NXDOMAIN", [])
    assert query(resolver, "example.org") == ("NXDOMAIN", [])
