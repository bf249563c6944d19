"""Site gateways: WireGuard transport between sites (SC-NET-02) and the Internet access gateway
(nginx reverse proxy in, tinyproxy egress allow-list out; SC-NET-01), plus the stand-in Internet.

This kernel has no wireguard module, so wg-quick falls back to wireguard-go (userspace, same protocol).
"""

from __future__ import annotations

import json
import subprocess

from lab.config import LabConfig, Site
from lab.nodes import netns, run_plain
from lab.podman import podman

PROXY_PORT = 8888
# nginx answers GET /healthz here, on the site address only: the other sites' availability probers
# (monitoring/) reach it through the WireGuard transport, the own site's prober checks its way out with it.
HEALTH_PORT = 8081
# The stand-in Internet: two web servers; only names in `internet.allow` pass the egress proxy.
INTERNET_HOSTS = {"repo.internet.lab": 10, "blocked.internet.lab": 11}


def internet_ip(cfg: LabConfig, host: str) -> str:
    return str(cfg.internet.subnet.network_address + INTERNET_HOSTS[host])


def gateway_ips(cfg: LabConfig, site: Site) -> dict[str, str]:
    i = cfg.sites.index(site)
    return {
        "site": site.ip(site.gateway),
        "transport": str(cfg.transport.subnet.network_address + 10 + i),
        "internet": str(cfg.internet.subnet.network_address + 20 + i),
        "tunnel": str(cfg.transport.tunnel_subnet.network_address + 1 + i),
    }


def gateway_run_args(cfg: LabConfig) -> list[str]:
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


def _ifname(container: str, ip: str) -> str:
    for line in netns(container, "ip", "-o", "-4", "addr", "show").stdout.splitlines():
        parts = line.split()
        if parts[3].split("/")[0] == ip:
            return parts[1].split("@")[0]
    raise RuntimeError(f"{container}: no interface with {ip}")


def _wg_conf(cfg: LabConfig, site: Site, privkey: str, pubkeys: dict[str, str]) -> str:
    me = gateway_ips(cfg, site)
    lines = ["[Interface]", f"Address = {me['tunnel']}/{cfg.transport.tunnel_subnet.prefixlen}",
             f"ListenPort = {cfg.transport.port}", f"PrivateKey = {privkey}", ""]
    for peer in cfg.sites:
        if peer is site:
            continue
        p = gateway_ips(cfg, peer)
        lines += ["[Peer]", f"# {peer.name}", f"PublicKey = {pubkeys[peer.name]}",
                  f"Endpoint = {p['transport']}:{cfg.transport.port}",
                  f"AllowedIPs = {peer.subnet}, {p['tunnel']}/32", "PersistentKeepalive = 25", ""]
    return "\n".join(lines)


def _nft_conf(cfg: LabConfig, site: Site, ifs: dict[str, str]) -> str:
    remote = ", ".join(str(s.subnet) for s in cfg.sites if s is not site)
    port = cfg.transport.port
    return f"""#!/usr/sbin/nft -f
# Gateway firewall written by lab/gateway.py.
flush ruleset
table inet sovlab_gw {{
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname "lo" accept
        # SC-NET-02: only WireGuard is accepted from the transport network.
        iifname "{ifs['transport']}" udp dport {port} counter accept
        iifname "{ifs['transport']}" counter drop
        ct state established,related accept
        # SC-NET-01: from the Internet only the reverse proxy is reachable (TLS; 80 only redirects to it).
        iifname "{ifs['internet']}" tcp dport {{ 80, 443 }} counter accept
        iifname "{ifs['internet']}" counter drop
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        # Site <-> other sites only through the tunnel; nothing is routed to the Internet (proxies only).
        iifname "{ifs['site']}" oifname "wg0" ip daddr {{ {remote} }} counter accept
        iifname "wg0" oifname "{ifs['site']}" ip saddr {{ {remote} }} counter accept
        counter drop
    }}
    chain output {{
        type filter hook output priority 0; policy accept;
        # SC-NET-02: nothing but WireGuard leaves on the transport network.
        oifname "{ifs['transport']}" udp dport {port} counter accept
        oifname "{ifs['transport']}" udp sport {port} counter accept
        oifname "{ifs['transport']}" counter drop
    }}
}}
"""


def _tinyproxy_conf(cfg: LabConfig, site: Site) -> str:
    return f"""# Egress allow-list proxy of the Internet access gateway (SC-NET-01); from lab/gateway.py.
User tinyproxy
Group tinyproxy
Port {PROXY_PORT}
Listen {site.ip(site.gateway)}
Timeout 60
DefaultErrorFile "/usr/share/tinyproxy/default.html"
LogFile "/var/log/tinyproxy/tinyproxy.log"
LogLevel Info
MaxClients 50
Allow {site.subnet}
# The proxy does not name itself to destinations (what the hardening role also enforces, SC-NET-01).
DisableViaHeader Yes
Filter "/etc/tinyproxy/allow.list"
FilterDefaultDeny Yes
ConnectPort 443
"""


def _allow_list(cfg: LabConfig) -> str:
    return "".join("^" + h.replace(".", r"\.") + "$\n" for h in cfg.internet.allow)


def _nginx_conf(cfg: LabConfig, site: Site) -> str:
    return f"""# Reverse proxy of the Internet access gateway: the only way in from the Internet (SC-NET-01). The
# agencies' routes are served over TLS on 443 (conf.d/sovcloud-routes.conf, written by the gateway route
# agent, playbooks/roles/gateway_routes); plain HTTP only redirects there (SC-CRY-01).
server {{
    listen {gateway_ips(cfg, site)['internet']}:80;
    location / {{ return 308 https://$host$request_uri; }}
}}
server {{
    listen {site.ip(site.gateway)}:{HEALTH_PORT};
    access_log off;
    location = /healthz {{ return 200 "ok\\n"; }}
    location / {{ return 404; }}
}}
"""


_GATHER = r"""
import json, os, subprocess
os.makedirs("/etc/wireguard", mode=0o700, exist_ok=True)
key = "/etc/wireguard/private.key"
if not os.path.exists(key) or not os.path.getsize(key):
    priv = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout
    os.umask(0o077)
    open(key, "w").write(priv)
priv = open(key).read().strip()
pub = subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True, check=True).stdout.strip()
addrs = {}
ip = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True)
for line in ip.stdout.splitlines():
    p = line.split()
    addrs[p[3].split("/")[0]] = p[1].split("@")[0]
files = {f: open(f).read() if os.path.exists(f) else None for f in json.loads(os.environ["FILES"])}
print(json.dumps({"priv": priv, "pub": pub, "addrs": addrs, "files": files}))
"""

_APPLY = r"""
import json, os, subprocess, sys
todo = json.load(sys.stdin)
for path, (content, mode) in todo["files"].items():
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.umask(0o077)
    with open(path + ".new", "w") as f:
        f.write(content)
    os.chmod(path + ".new", int(mode, 8))
    os.replace(path + ".new", path)
if os.path.exists("/etc/nginx/sites-enabled/default"):
    os.remove("/etc/nginx/sites-enabled/default")
units = todo["units"]
if todo["files"]:
    subprocess.run(["systemctl", "daemon-reload"], check=True)  # unit drop-ins are among the files
if todo["restart"]:
    subprocess.run(["systemctl", "restart", *todo["restart"]], check=True)
subprocess.run(["systemctl", "enable", "-q", *units], check=True)
subprocess.run(["systemctl", "start", *units], check=True)
"""

# Which service reloads a file; files are rewritten (and services restarted) only when they change.
_FILES = {"/etc/wireguard/wg0.conf": ("0600", "wg-quick@wg0"), "/etc/nftables.conf": ("0755", "nftables"),
          "/etc/tinyproxy/tinyproxy.conf": ("0644", "tinyproxy"),
          "/etc/tinyproxy/allow.list": ("0644", "tinyproxy"),
          "/etc/nginx/sites-enabled/sovlab": ("0644", "nginx"),
          "/etc/systemd/system/nginx.service.d/sovlab-after-wg.conf": ("0644", "nginx")}
# nginx (and so the health endpoint) starts after the tunnel is up and stops before it goes down: a
# healthy /healthz means gateway AND transport, and no prober counts a round through a half-up gateway.
_NGINX_AFTER_WG = "[Unit]\nWants=wg-quick@wg0.service\nAfter=wg-quick@wg0.service\n"


def configure_gateways(cfg: LabConfig) -> dict[str, list[str]]:
    """Converge every gateway; returns the services restarted per site (empty when nothing changed)."""
    state = {}
    restarted: dict[str, list[str]] = {}
    for site in cfg.sites:
        c = cfg.container(site.gateway.name)
        out = podman("exec", "-e", f"FILES={json.dumps(list(_FILES))}", c, "python3", "-c", _GATHER)
        state[site.name] = json.loads(out)
    pubkeys = {name: st["pub"] for name, st in state.items()}
    for site in cfg.sites:
        c = cfg.container(site.gateway.name)
        st = state[site.name]
        ips = gateway_ips(cfg, site)
        ifs = {k: st["addrs"][ips[k]] for k in ("site", "transport", "internet")}
        want = {"/etc/wireguard/wg0.conf": _wg_conf(cfg, site, st["priv"], pubkeys),
                "/etc/nftables.conf": _nft_conf(cfg, site, ifs),
                "/etc/tinyproxy/tinyproxy.conf": _tinyproxy_conf(cfg, site),
                "/etc/tinyproxy/allow.list": _allow_list(cfg),
                "/etc/nginx/sites-enabled/sovlab": _nginx_conf(cfg, site),
                "/etc/systemd/system/nginx.service.d/sovlab-after-wg.conf": _NGINX_AFTER_WG}
        changed = {p: (text, _FILES[p][0]) for p, text in want.items() if st["files"].get(p) != text}
        restart = sorted({_FILES[p][1] for p in changed})
        units = sorted({svc for _, svc in _FILES.values()})
        podman("exec", "-i", c, "python3", "-c", _APPLY,
               input=json.dumps({"files": changed, "restart": restart, "units": units}))
        if restart:
            restarted[site.name] = restart
    return restarted


def route_sites(cfg: LabConfig) -> None:
    """Nodes send other sites' traffic to their gateway; they have no other way out (no default route)."""
    for site in cfg.sites:
        gw = site.ip(site.gateway)
        members = [cfg.container(n.name) for n in site.nodes if n.role != "gateway"]
        members.append(cfg.container(f"{site.name}-s3"))
        pids = podman("inspect", "-f", "{{.State.Pid}}", *members).split()
        for pid in pids:
            for other in cfg.sites:
                if other is not site:
                    subprocess.run(["nsenter", "-t", pid, "-n", "ip", "route", "replace", str(other.subnet),
                                    "via", gw], check=True, capture_output=True)

