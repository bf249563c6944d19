"""Site gateways: WireGuard transport between sites (SC-NET-02) and the Internet access gateway
(nginx reverse proxy in, tinyproxy egress allow-list out; SC-NET-01), plus the stand-in Internet.

This kernel has no wireguard module, so wg-quick falls back to wireguard-go (userspace, same protocol).
"""

from __future__ import annotations

from lab.config import LabConfig, Site
from lab.nodes import netns, run_plain
from lab.podman import podman

PROXY_PORT = 8888
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


def _exec(container: str, script: str, input: str | None = None) -> str:
    return podman("exec", "-i", container, "sh", "-c", script, input=input)


def _put(container: str, path: str, content: str, mode: str = "0644") -> bool:
    """Write a file in the container; True if it changed (so services restart only when needed)."""
    old = podman("exec", container, "cat", path, check=False)
    if old == content:
        return False
    _exec(container, f"umask 077; cat > {path}.new && chmod {mode} {path}.new && mv {path}.new {path}",
          input=content)
    return True


def _ifname(container: str, ip: str) -> str:
    for line in netns(container, "ip", "-o", "-4", "addr", "show").stdout.splitlines():
        parts = line.split()
        if parts[3].split("/")[0] == ip:
            return parts[1].split("@")[0]
    raise RuntimeError(f"{container}: no interface with {ip}")


def wg_pubkey(container: str) -> str:
    return _exec(container, "umask 077; mkdir -p /etc/wireguard; test -s /etc/wireguard/private.key || "
                 "wg genkey > /etc/wireguard/private.key; wg pubkey < /etc/wireguard/private.key").strip()


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
        # SC-NET-01: from the Internet only the reverse proxy is reachable.
        iifname "{ifs['internet']}" tcp dport 80 counter accept
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
ViaProxyName "{site.gateway.name}"
Filter "/etc/tinyproxy/allow.list"
FilterDefaultDeny Yes
ConnectPort 443
"""


def _allow_list(cfg: LabConfig) -> str:
    return "".join("^" + h.replace(".", r"\.") + "$\n" for h in cfg.internet.allow)


def _nginx_conf(cfg: LabConfig, site: Site) -> str:
    workers = "".join(f"    server {site.ip(n)}:8080;\n" for n in site.nodes if n.role == "worker")
    return f"""# Reverse proxy of the Internet access gateway: the only way in from the Internet (SC-NET-01).
upstream site_workers {{
{workers}}}
server {{
    listen {gateway_ips(cfg, site)['internet']}:80;
    location / {{
        proxy_pass http://site_workers;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
}}
"""


def configure_gateways(cfg: LabConfig) -> None:
    pubkeys = {s.name: wg_pubkey(cfg.container(s.gateway.name)) for s in cfg.sites}
    for site in cfg.sites:
        c = cfg.container(site.gateway.name)
        ips = gateway_ips(cfg, site)
        ifs = {k: _ifname(c, ips[k]) for k in ("site", "transport", "internet")}
        priv = _exec(c, "cat /etc/wireguard/private.key").strip()
        restart = []
        if _put(c, "/etc/wireguard/wg0.conf", _wg_conf(cfg, site, priv, pubkeys), "0600"):
            restart.append("wg-quick@wg0")
        if _put(c, "/etc/nftables.conf", _nft_conf(cfg, site, ifs), "0755"):
            restart.append("nftables")
        changed = _put(c, "/etc/tinyproxy/tinyproxy.conf", _tinyproxy_conf(cfg, site))
        if _put(c, "/etc/tinyproxy/allow.list", _allow_list(cfg)) or changed:
            restart.append("tinyproxy")
        if _put(c, "/etc/nginx/sites-enabled/sovlab", _nginx_conf(cfg, site)):
            restart.append("nginx")
        _exec(c, "rm -f /etc/nginx/sites-enabled/default")
        units = ["wg-quick@wg0", "nftables", "tinyproxy", "nginx"]
        script = f"systemctl enable -q {' '.join(units)} && systemctl start {' '.join(units)}"
        if restart:
            script = f"systemctl restart {' '.join(restart)} && {script}"
        _exec(c, script)


def route_sites(cfg: LabConfig) -> None:
    """Nodes send other sites' traffic to their gateway; they have no other way out (no default route)."""
    for site in cfg.sites:
        gw = site.ip(site.gateway)
        members = [cfg.container(n.name) for n in site.nodes if n.role != "gateway"]
        members.append(cfg.container(f"{site.name}-s3"))
        for c in members:
            for other in cfg.sites:
                if other is not site:
                    netns(c, "ip", "route", "replace", str(other.subnet), "via", gw)

