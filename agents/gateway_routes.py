"""Gateway route agent: publishes the agencies' route registrations on the Internet access gateway's nginx.

Tenants register routes in ConfigMaps labelled `sovcloud.kz/gateway-routes=true` (key `routes.json`, written
by the tenant and workload charts). The agent, on the gateway node, checks each route (hostname under the
government domain, backend in the registering agency's own namespaces), resolves the Service to its ready
pods through EndpointSlices (the gateway proxies to pod addresses, like ingress-nginx; no kube-proxy on the
way), issues the hostname a certificate from the gateway's routes CA, and reloads nginx when anything
changed. TLS only (SC-CRY-01): there is no plaintext listener for routes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agents import kubeapi

log = logging.getLogger("sovcloud-gateway-routes")
ROUTE_LABEL = "sovcloud.kz/gateway-routes=true"
AGENCY_LABEL = "sovcloud.kz/agency"
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
CERT_CHECK_S = 3600  # how often a published hostname's certificate is checked (renewed 30 days ahead)


@dataclass(frozen=True)
class Route:
    host: str
    path: str
    min_tls: str
    namespace: str
    service: str
    port: int
    source: str  # namespace/configmap that registered it


def routes(configmaps: list[dict], namespaces: list[dict], domain: str) -> tuple[list[Route], list[str]]:
    """The routes to publish and, for each one refused, why. A hostname+path pair belongs to whoever
    registered it first; an agency can only point routes at its own namespaces."""
    agency = {n["metadata"]["name"]: n["metadata"].get("labels", {}).get(AGENCY_LABEL) for n in namespaces}
    ok: dict[tuple[str, str], Route] = {}
    refused: list[str] = []
    for cm in sorted(configmaps, key=lambda c: (c["metadata"].get("creationTimestamp", ""),
                                                c["metadata"]["namespace"], c["metadata"]["name"])):
        source = f"{cm['metadata']['namespace']}/{cm['metadata']['name']}"
        owner = agency.get(cm["metadata"]["namespace"])
        try:
            entries = json.loads((cm.get("data") or {})["routes.json"])
        except (KeyError, ValueError) as e:
            refused.append(f"{source}: no valid routes.json ({e})")
            continue
        for i, r in enumerate(entries if isinstance(entries, list) else []):
            where = f"{source} routes[{i}]"
            try:
                route = Route(host=str(r["host"]).lower(), path=str(r.get("path", "/")),
                              min_tls=str(r.get("tls", {}).get("minVersion", "1.2")),
                              namespace=str(r["backend"]["namespace"]), service=str(r["backend"]["service"]),
                              port=int(r["backend"]["port"]), source=source)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                refused.append(f"{where}: malformed ({e!r})")
                continue
            why = _refusal(route, domain, owner, agency.get(route.namespace))
            if why is None and (route.host, route.path) in ok:
                why = f"{route.host}{route.path} is already published by {ok[(route.host, route.path)].source}"
            if why:
                refused.append(f"{where}: {why}")
            else:
                ok[(route.host, route.path)] = route
    return sorted(ok.values(), key=lambda r: (r.host, r.path)), refused


def _refusal(route: Route, domain: str, owner: str | None, backend_owner: str | None) -> str | None:
    if not _HOSTNAME.match(route.host) or not (route.host == domain or route.host.endswith("." + domain)):
        return f"host {route.host!r} is not a hostname under the government domain {domain!r}"
    if not _PATH.match(route.path):
        return f"path {route.path!r} is not a plain URL path"
    if route.min_tls not in ("1.2", "1.3"):
        return f"tls.minVersion {route.min_tls!r} is not 1.2 or 1.3"
    if not owner:
        return f"namespace is not an agency's (no {AGENCY_LABEL} label)"
    if backend_owner != owner:
        return f"backend namespace {route.namespace!r} does not belong to agency {owner!r}"
    return None


def upstreams(route: Route, services: list[dict], slices: list[dict]) -> list[str]:
    """Ready pod addresses (ip:port) behind the route's Service port."""
    svc = next((s for s in services if s["metadata"]["namespace"] == route.namespace
                and s["metadata"]["name"] == route.service), None)
    port = next((p for p in (svc or {}).get("spec", {}).get("ports", []) if p.get("port") == route.port), None)
    if port is None:
        return []
    out = set()
    for sl in slices:
        meta = sl["metadata"]
        if meta["namespace"] != route.namespace or meta.get("labels", {}).get(
                "kubernetes.io/service-name") != route.service or sl.get("addressType") != "IPv4":
            continue
        target = next((p["port"] for p in sl.get("ports") or [] if p.get("name", "") == port.get("name", "")), None)
        if target is None:
            continue
        for ep in sl.get("endpoints") or []:
            if ep.get("conditions", {}).get("ready", True):
                out.update(f"{a}:{target}" for a in ep.get("addresses", []))
    return sorted(out)


def render(published: list[Route], backends: dict[Route, list[str]], cert_dir: str, listen: list[str]) -> str:
    """nginx http-context configuration: a TLS server per hostname, a location per path."""
    out = ["# Written by the sovcloud gateway route agent; edits are overwritten.",
           "# Unknown names get no certificate and no answer.",
           "server {", *(f"    listen {a} ssl default_server;" for a in listen), "    ssl_reject_handshake on;", "}"]
    for host in sorted({r.host for r in published}):
        mine = sorted((r for r in published if r.host == host), key=lambda r: r.path)
        protocols = "TLSv1.3" if any(r.min_tls == "1.3" for r in mine) else "TLSv1.2 TLSv1.3"
        out += server_block(host, listen, f"{cert_dir}/{host}.crt", f"{cert_dir}/{host}.key", protocols,
                            [(r.path, f"{r.source} -> {r.namespace}/{r.service}:{r.port}",
                              _upstream(r) if backends[r] else None) for r in mine])
    for r in published:
        if backends[r]:
            out += upstream_block(_upstream(r), backends[r])
    return "\n".join(out) + "\n"


def server_block(host: str, listen: list[str], cert: str, key: str, protocols: str | None,
                 locations: list[tuple[str, str, str | None]]) -> list[str]:
    """One published hostname: TLS with its certificate, HSTS, and per (path, comment, upstream) a location that
    proxies to the upstream (503 without one). Also the DR runbook's published services (dr/runbook.py)."""
    out = ["server {", *(f"    listen {a} ssl;" for a in listen), f"    server_name {host};",
           f"    ssl_certificate {cert};", f"    ssl_certificate_key {key};",
           *([f"    ssl_protocols {protocols};"] if protocols else []),
           "    add_header Strict-Transport-Security \"max-age=31536000\" always;"]
    for path, comment, upstream in locations:
        out += [f"    # {comment}", f"    location {path} {{"]
        if upstream:
            out += [f"        proxy_pass http://{upstream};", "        proxy_set_header Host $host;",
                    "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                    "        proxy_set_header X-Forwarded-Proto https;"]
        else:
            out += ["        return 503;"]
        out += ["    }"]
    return [*out, "}"]


def upstream_block(name: str, servers: list[str]) -> list[str]:
    return [f"upstream {name} {{", *(f"    server {b};" for b in servers), "}"]


def _upstream(r: Route) -> str:
    return "route_" + hashlib.sha256(f"{r.host}{r.path}".encode()).hexdigest()[:12]


def ensure_certificate(host: str, cert_dir: Path, ca_cert: Path, ca_key: Path, days: int = 90,
                       renew_before_s: int = 30 * 86400) -> bool:
    """Issue `host` a server certificate from the routes CA unless a valid one is there; True if issued."""
    crt, key = cert_dir / f"{host}.crt", cert_dir / f"{host}.key"
    if crt.exists() and key.exists():
        fresh = subprocess.run(["openssl", "x509", "-noout", "-checkend", str(renew_before_s), "-in", str(crt)],
                               capture_output=True)
        ours = subprocess.run(["openssl", "verify", "-partial_chain", "-CAfile", str(ca_cert), str(crt)],
                              capture_output=True)
        if fresh.returncode == 0 and ours.returncode == 0:
            return False
    with tempfile.TemporaryDirectory() as tmp:
        ext = Path(tmp, "ext")
        ext.write_text(f"subjectAltName=DNS:{host}\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature\n")
        csr, new_key, new_crt = Path(tmp, "csr"), Path(tmp, "key"), Path(tmp, "crt")
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(new_key), "-subj", f"/CN={host}", "-out", str(csr)],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                        "-set_serial", "0x" + os.urandom(16).hex(), "-days", str(days), "-extfile", str(ext),
                        "-out", str(new_crt)], check=True, capture_output=True)
        # Full chain up to (not including) the root the clients trust.
        _write(crt, new_crt.read_text() + ca_cert.read_text(), 0o644)
        _write(key, new_key.read_text(), 0o600)
    return True


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


CONFIGMAPS, NAMESPACES = "/api/v1/configmaps", "/api/v1/namespaces"
SERVICES, SLICES = "/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices"
COLLECTIONS = [(CONFIGMAPS, {"labelSelector": ROUTE_LABEL}), (NAMESPACES, {}), (SERVICES, {}), (SLICES, {})]


class Agent:
    def __init__(self, domain: str, conf: Path, cert_dir: Path, ca_cert: Path, ca_key: Path, listen: list[str]):
        self.domain, self.conf, self.cert_dir = domain, conf, cert_dir
        self.ca_cert, self.ca_key, self.listen = ca_cert, ca_key, listen
        self.refused: list[str] = []
        self.checked: dict[str, float] = {}  # hostname -> when its certificate was last found valid

    def sync(self, api) -> bool:
        """Publishes what `api` (the API, or the agent's watched copy of it) shows; True if nginx reloaded."""
        cms = api.items(CONFIGMAPS, labelSelector=ROUTE_LABEL)
        published, refused = routes(cms, api.items(NAMESPACES), self.domain)
        if refused != self.refused:
            for why in refused:
                log.warning("route refused: %s", why)
            self.refused = refused
        services = api.items(SERVICES) if published else []
        slices = api.items(SLICES) if published else []
        backends = {r: upstreams(r, services, slices) for r in published}
        self.cert_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        issued = []
        now = time.monotonic()
        for host in sorted({r.host for r in published}):
            if now - self.checked.get(host, -CERT_CHECK_S) >= CERT_CHECK_S:  # two openssl runs: not every sync
                if ensure_certificate(host, self.cert_dir, self.ca_cert, self.ca_key):
                    issued.append(host)
                self.checked[host] = now
        text = render(published, backends, str(self.cert_dir), self.listen)
        old = self.conf.read_text() if self.conf.exists() else None
        if text == old and not issued:
            return False
        _write(self.conf, text, 0o644)
        check = subprocess.run(["nginx", "-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:  # never leave nginx a configuration it refuses
            if old is None:
                self.conf.unlink()
            else:
                _write(self.conf, old, 0o644)
            raise RuntimeError(f"nginx refused the rendered routes: {check.stderr.strip()}")
        # Returns when the previous configuration's workers are gone (the gateway's ExecReload): the routes are
        # in force for every request after this.
        subprocess.run(["systemctl", "reload-or-restart", "nginx"], check=True, capture_output=True)
        log.info("published %d route(s) on %d hostname(s)%s", len(published), len({r.host for r in published}),
                 f"; issued certificates for {', '.join(issued)}" if issued else "")
        return True


def main(argv: list[str] | None = None) -> int:
    p = kubeapi.arguments(__doc__.splitlines()[0])
    p.add_argument("--domain", required=True, help="government domain every published hostname is under")
    p.add_argument("--conf", default="/var/lib/sovcloud-gateway/routes.d/agencies.conf", type=Path,
                   help="the nginx servers this agent writes (a file nginx.conf includes)")
    p.add_argument("--cert-dir", default="/var/lib/sovcloud-gateway-routes/certs", type=Path)
    p.add_argument("--routes-ca", required=True, type=Path, help="CA certificate that issues the hostnames'")
    p.add_argument("--routes-ca-key", required=True, type=Path)
    p.add_argument("--listen", action="append", required=True, help="nginx listen address (ip:port), repeatable")
    a = p.parse_args(argv)
    agent = Agent(a.domain, a.conf, a.cert_dir, a.routes_ca, a.routes_ca_key, a.listen)
    return kubeapi.serve(agent.sync, kubeapi.Client(a.server, a.ca, a.cert, a.key), COLLECTIONS, a)


if __name__ == "__main__":
    raise SystemExit(main())
