"""Site failover and failback executed, on the lab: the secondary site takes over a published service
through its own gateway, restored from the backup copy held at its own S3, and gives it back.

A published service (infra stack `gateway.published_services`) is served at its active site by:
  data      the tenant's volume data on the site's workers (`PUBLISH_DIR/<name>`; backup dataset `dataset`)
  backend   one HTTP server per worker on `port` (a transient systemd unit standing in for the tenant
            workload: it serves the restored files as they are, from the workers' volume data)
  route     an nginx TLS server block for the hostname on the site gateway -> the workers, with a
            certificate from the gateway's routes CA (issued as the gateway route agent issues them)
Failover fences the failed site (route withdrawn, backend stopped) before the target serves anything, so
the hostname is never answered by two sites; the decision (refusals, RPO check) is dr.failover's plan.
`LabSites` holds every lab-specific operation; another inventory implements the same few methods.
"""

from __future__ import annotations

import ssl
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from dr import failover as plans
from dr import jobs, restore, s3io, sources
from dr.backup import TS_FORMAT
from dr.config import DrConfig

PUBLISH_DIR = "/srv/sovcloud-published"
# The gateway route agent's package, routes CA and certificate directory (playbooks/roles/gateway_routes).
GATEWAY_AGENTS = "/usr/local/lib/sovcloud"
GATEWAY_ROUTES_CA = "/etc/sovcloud/gateway-routes/routes-ca"
GATEWAY_CERTS = "/var/lib/sovcloud-gateway-routes/certs"


class RunbookError(Exception):
    pass


@dataclass(frozen=True)
class Service:
    name: str
    hostname: str
    dataset: str  # the backup dataset holding its data
    port: int = 8081

    @property
    def unit(self) -> str:
        return f"sovcloud-published-{self.name}"


class LabSites:
    """The lab's gateways and workers, over ssh (lab.nodes) and the host's route to the Internet network."""

    def __init__(self, lab_cfg) -> None:
        self.lab = lab_cfg

    def _ssh(self, ip: str, cmd: str, data: bytes | None = None, timeout: float = 60) -> bytes:
        from lab.nodes import ssh_args

        r = subprocess.run([*ssh_args(ip), cmd], input=data, capture_output=True, timeout=timeout, check=False)
        if r.returncode != 0:
            raise RunbookError(f"{ip}: `{cmd[:80]}` failed ({r.returncode}): {r.stderr.decode().strip()[-400:]}")
        return r.stdout

    def workers(self, site: str) -> list[str]:
        s = self.lab.site(site)
        return [s.ip(n) for n in s.nodes if n.role == "worker"]

    def gateway(self, site: str) -> tuple[str, str]:
        """(site address for ssh, Internet address the published hostname is served on)."""
        from lab.gateway import gateway_ips

        ips = gateway_ips(self.lab, self.lab.site(site))
        return ips["site"], ips["internet"]

    def _route(self, site: str, svc: Service) -> str:
        upstream = f"sovcloud_published_{svc.name.replace('-', '_')}"
        servers = "".join(f"    server {ip}:{svc.port};\n" for ip in self.workers(site))
        # `listen 443 ssl` as the route agent's servers: they share the socket, SNI picks the server.
        return (f"# Published service {svc.name} while {site} is active; written by dr/runbook.py.\n"
                f"upstream {upstream} {{\n{servers}}}\n"
                f"server {{\n    listen 443 ssl;\n    server_name {svc.hostname};\n"
                f"    ssl_certificate {GATEWAY_CERTS}/{svc.hostname}.crt;\n"
                f"    ssl_certificate_key {GATEWAY_CERTS}/{svc.hostname}.key;\n"
                f"    ssl_protocols TLSv1.2 TLSv1.3;\n"
                f"    location / {{ proxy_pass http://{upstream}; proxy_set_header Host $host; }}\n}}\n")

    def _certify(self, site: str, svc: Service) -> None:
        """The hostname's certificate from the site gateway's routes CA, by the route agent's own code."""
        code = ("from pathlib import Path; from agents.gateway_routes import ensure_certificate; "
                f"ensure_certificate({svc.hostname!r}, Path({GATEWAY_CERTS!r}), Path({GATEWAY_ROUTES_CA + '.crt'!r}), "
                f"Path({GATEWAY_ROUTES_CA + '.key'!r}))")
        self._ssh(self.gateway(site)[0], f"sudo PYTHONPATH={GATEWAY_AGENTS} python3 -c \"{code}\"")

    def _route_file(self, svc: Service) -> str:
        return f"/etc/nginx/sites-enabled/{svc.unit}"

    def publish(self, site: str, svc: Service, data: Path) -> None:
        tar = subprocess.run(["tar", "-C", str(data), "-cf", "-", "."], capture_output=True, check=True).stdout
        d = f"{PUBLISH_DIR}/{svc.name}"
        for ip in self.workers(site):
            self._ssh(ip, f"sudo systemctl stop {svc.unit} 2>/dev/null; sudo rm -rf {d} && sudo mkdir -p {d} && "
                          f"sudo tar -C {d} -xf - && sudo systemd-run --quiet --unit={svc.unit} "
                          f"python3 -m http.server {svc.port} --bind {ip} --directory {d}", tar)
        gw = self.gateway(site)[0]
        self._certify(site, svc)
        self._ssh(gw, f"sudo tee {self._route_file(svc)} >/dev/null && sudo nginx -t -q && "
                      "sudo systemctl reload nginx", self._route(site, svc).encode())
        # Published means served: the backends bind a moment after systemd-run returns (bounded wait).
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.get(site, svc).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RunbookError(f"{svc.hostname}: {site}'s gateway does not serve it 30 s after publishing")
            time.sleep(0.5)

    def unpublish(self, site: str, svc: Service) -> None:
        """Withdraw the route first (no new requests), then stop the backends and drop the data."""
        self._ssh(self.gateway(site)[0], f"sudo rm -f {self._route_file(svc)} && sudo systemctl reload nginx")
        for ip in self.workers(site):
            self._ssh(ip, f"sudo systemctl stop {svc.unit} 2>/dev/null; sudo rm -rf {PUBLISH_DIR}/{svc.name}")

    def pull(self, site: str, svc: Service, dst: Path) -> None:
        """The service's data as it is on the site's first worker (what a backup job reads)."""
        tar = self._ssh(self.workers(site)[0], f"sudo tar -C {PUBLISH_DIR}/{svc.name} -cf - .")
        dst.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-C", str(dst), "-xf", "-"], input=tar, check=True)

    def get(self, site: str, svc: Service, path: str = "/") -> httpx.Response:
        """A client on the Internet asking the site's gateway for the published hostname over TLS, checking
        the certificate for that name against the stack's root CA. A gateway that does not publish the name
        refuses the handshake (httpx.ConnectError)."""
        from lab import inventory

        ca = ssl.create_default_context(cafile=inventory.state_dir(self.lab) / site / "pki" / "root-ca.crt")
        with httpx.Client(verify=ca, timeout=10) as client:
            return client.get(f"https://{self.gateway(site)[1]}{path}", headers={"Host": svc.hostname},
                              extensions={"sni_hostname": svc.hostname})

    def serves(self, site: str, svc: Service) -> bool:
        try:
            return self.get(site, svc).status_code == 200
        except httpx.ConnectError:
            return False

    def observe(self, dr_cfg: DrConfig, svc: Service, origin: str, roles: dict[str, str]) -> dict:
        """The state description dr.failover plans from, observed now (roles are the runbook's record)."""
        from lab import cluster, s3
        from lab.podman import podman

        out: dict = {"sites": {}, "internet_gateway": {"routes_to": next(n for n, r in roles.items() if r == "active")}}
        for name, role in roles.items():
            site = self.lab.site(name)
            gw = podman("inspect", "-f", "{{.State.Running}}", self.lab.container(site.gateway.name), check=False)
            try:
                s3.wait_s3(site, deadline_s=3)
                s3_state = "up"
            except TimeoutError:
                s3_state = "down"
            age = None
            if s3_state == "up":
                try:
                    ts = restore.latest_timestamp(dr_cfg, dr_cfg.site(name), origin, svc.dataset)
                    age = max(time.time() - datetime.strptime(ts, TS_FORMAT).replace(tzinfo=UTC).timestamp(), 0.0)
                except (restore.RestoreError, *s3io.S3Error):
                    pass
            out["sites"][name] = {"role": role, "gateway": "up" if gw.strip() == "true" else "down", "s3": s3_state,
                                  "control_plane": "healthy" if cluster.readyz(site) else "down",
                                  "backup_age_seconds": age}
        return out


def _take_over(dr_cfg: DrConfig, sites: LabSites, svc: Service, src: str, dst: str, plan: plans.Plan) -> dict:
    """Execute a plan's steps: fence src, restore src's newest backup from dst's own copy, promote, verify."""
    t: dict[str, float] = {}
    t0 = time.monotonic()
    if plan.state["sites"][src]["gateway"] == "up":
        sites.unpublish(src, svc)
    t["fence"] = time.monotonic() - t0
    with tempfile.TemporaryDirectory(prefix="dr-takeover-") as work:
        f = restore.fetch(dr_cfg, src, svc.dataset, None, Path(work) / "fetch", sites=[dst])
        restore.restore_tar(f, Path(work) / "data")  # checks the sentinel in the files
        t["restore"] = time.monotonic() - t0 - t["fence"]
        sites.publish(dst, svc, Path(work) / "data")
    sentinel = f.manifest["sentinel"]["value"]
    deadline = time.monotonic() + 30
    while True:  # bounded: the backends need a moment to bind after systemd-run returns
        try:
            r = sites.get(dst, svc, f"/{sources.SENTINEL_FILE}")
            if r.status_code == 200 and r.text.strip() == sentinel:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RunbookError(f"{svc.hostname} at {dst}'s gateway does not serve the restored data")
        time.sleep(0.5)
    t["total"] = time.monotonic() - t0
    return {"action": plan.action, "from": src, "to": dst, "steps": plan.steps, "warnings": plan.warnings,
            "state": plan.state, "executed": True,
            "restored_backup": f"{src}/{svc.dataset}@{f.manifest['timestamp']}",
            "sentinel": sentinel, "seconds": {k: round(v, 2) for k, v in t.items()}}


def failover(dr_cfg: DrConfig, sites: LabSites, svc: Service, src: str, dst: str, force: bool = False) -> dict:
    """`dst` takes over `svc` from `src` (failed or evacuated) from the newest backup held at dst."""
    roles = {s.name: "active" if s.name == src else "standby" for s in dr_cfg.sites}
    plan = plans.failover(sites.observe(dr_cfg, svc, src, roles), src, dst, dr_cfg.rpo_seconds, force)
    return _take_over(dr_cfg, sites, svc, src, dst, plan)


def failback(dr_cfg: DrConfig, sites: LabSites, svc: Service, src: str, dst: str, state: dict) -> dict:
    """Give `svc` back from `src` (the site that took over) to `dst`: back up src's current data (changes
    made while it was active are kept), replicate it to dst, then take over at dst. `state` is the
    failover's record (roles)."""
    with tempfile.TemporaryDirectory(prefix="dr-failback-") as work:
        sites.pull(src, svc, Path(work) / "data")
        rep = jobs.backup_dir(dr_cfg, Path(work) / "data", svc.dataset, src)
    if dst not in rep.verified_sites:
        raise RunbookError(f"failback: the fresh backup of {svc.dataset} is not verified at {dst}: {rep.to_dict()}")
    roles = {n: s["role"] for n, s in state["sites"].items()}
    plan = plans.failback(sites.observe(dr_cfg, svc, src, roles), src, dst, dr_cfg.rpo_seconds)
    out = _take_over(dr_cfg, sites, svc, src, dst, plan)
    out["backup"] = asdict(rep.sites[dst])["status"]
    return out
