"""The gateways' "hardware": each gateway node sits on three networks (its site's, the transport network and
the stand-in Internet), with the capabilities a router has (NET_ADMIN, a TUN device, forwarding on). What runs
on it (the tunnels, the firewall, the proxies) is the stack's: playbooks/network.yml, run by `pulumi up`.

The stand-in Internet: two web servers; only names in the stack's `gateway.allowed_egress` pass the egress
proxy. The addresses here are the lab's plan; infra/stacks/lab.yaml gives the gateways the same ones.
"""

from __future__ import annotations

import subprocess

from lab.config import LabConfig, Site
from lab.nodes import run_plain
from lab.podman import podman

INTERNET_HOSTS = {"repo.internet.lab": 10, "blocked.internet.lab": 11}


def internet_ip(cfg: LabConfig, host: str) -> str:
    return str(cfg.internet.subnet.network_address + INTERNET_HOSTS[host])


def gateway_ips(cfg: LabConfig, site: Site) -> dict[str, str]:
    """The gateway's address on each of its networks (its site's, the transport network, the Internet)."""
    i = cfg.sites.index(site)
    return {
        "site": site.ip(site.gateway),
        "transport": str(cfg.transport.subnet.network_address + 10 + i),
        "internet": str(cfg.internet.subnet.network_address + 20 + i),
    }


def gateway_run_args(cfg: LabConfig) -> list[str]:
    # A router's capabilities. Forwarding is set at creation: podman mounts /proc/sys read-only for a
    # container without full privileges, so the node cannot switch it on itself (the role checks it is on).
    args = ["--cap-add", "NET_ADMIN,NET_RAW", "--device", "/dev/net/tun", "--sysctl", "net.ipv4.ip_forward=1"]
    for host in INTERNET_HOSTS:
        args += ["--add-host", f"{host}:{internet_ip(cfg, host)}"]
    return args


def gateway_networks(cfg: LabConfig, site: Site) -> list[tuple[str, str | None]]:
    ips = gateway_ips(cfg, site)
    return [(cfg.network(site.name), ips["site"]), (cfg.network("transport"), ips["transport"]),
            (cfg.network("internet"), ips["internet"])]


def ensure_internet(cfg: LabConfig) -> None:
    for host in INTERNET_HOSTS:
        script = (f"mkdir -p /srv && echo {host} > /srv/index.html && "
                  "exec python3 -m http.server 80 --directory /srv")
        run_plain(cfg.container(f"inet-{host.split('.')[0]}"), host,
                  [(cfg.network("internet"), internet_ip(cfg, host))], 64,
                  {"role": "internet", "instance": cfg.name}, [], ["sh", "-c", script])


def route_appliances(cfg: LabConfig) -> None:
    """The sites' S3 appliances answer the other sites through their site's gateway (an appliance's network
    settings are the lab's; the nodes' routes are the stack's, playbooks/roles/site_routes)."""
    for site in cfg.sites:
        gw = site.ip(site.gateway)
        pid = podman("inspect", "-f", "{{.State.Pid}}", cfg.container(f"{site.name}-s3")).strip()
        for other in cfg.sites:
            if other is not site:
                subprocess.run(["nsenter", "-t", pid, "-n", "ip", "route", "replace", str(other.subnet),
                                "via", gw], check=True, capture_output=True)
