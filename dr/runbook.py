"""Site failover and failback executed on a deployed cloud: the secondary site takes over a published service
through its own gateway, restored from the backup copy held at its own S3, and gives it back.

Everything is reached as the stack describes it (its outputs): nodes over SSH with the stack's inventory
(the connection settings of `sovcloud:hosts`), each site's gateway addresses, admin kubeconfig and the root
CA that clients verify the published name against. Nothing here knows how the machines were made.

A published service (infra stack `gateway.published_services`) is served at its active site by:
  data      the tenant's volume data on the site's workers (`PUBLISH_DIR/<name>`; backup dataset `dataset`)
  backend   one HTTP server per worker on `port`, a NodePort (the range the workers' host firewall admits
            from the site): a transient systemd unit standing in for the tenant workload, serving the
            restored files as they are
  route     an nginx TLS server block for the hostname on the site gateway -> the workers, with the
            certificate the stack issued for the name (every gateway holds it: playbooks/roles/internet_gateway)
Failover fences the failed site (route withdrawn, backend stopped) before the target serves anything, so
the hostname is never answered by two sites; the decision (refusals, RPO check) is dr.failover's plan.
"""

from __future__ import annotations

import shlex
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from agents import gateway_routes
from common.wait import until
from dr import failover as plans
from dr import jobs, k8s, layout, restore, s3io, sources
from dr.config import DrConfig

PUBLISH_DIR = "/srv/sovcloud-published"
# Where the internet_gateway role installs the published services' certificates (internet_gateway_published_dir).
PUBLISHED_CERTS = "/etc/nginx/sovcloud-published"
# The gateway's runtime routes, which nginx includes (internet_gateway_routes_dir).
ROUTES_DIR = "/var/lib/sovcloud-gateway/routes.d"
# The gateway's nginx reload returns once no worker of the previous configuration answers any more (the
# internet_gateway role's ExecReload), so a route is in force, or gone, when this returns.
RELOAD_NGINX = "sudo systemctl reload nginx"


class RunbookError(Exception):
    pass


@dataclass(frozen=True)
class Service:
    name: str
    hostname: str
    dataset: str  # the backup dataset holding its data
    port: int = 30081

    @property
    def unit(self) -> str:
        return f"sovcloud-published-{self.name}"


class StackSites:
    """The deployed sites as the stack's outputs describe them (`pulumi stack output --json --show-secrets`):
    `inventory` (hosts, their site and role, the SSH settings), `sites` (each site's gateway and cluster),
    `kubeconfigs` (cluster -> admin kubeconfig) and `root_ca`."""

    def __init__(self, outputs: dict) -> None:
        self.sites = outputs["sites"]
        self.root_ca = outputs["root_ca"]
        self.kubeconfigs = outputs["kubeconfigs"]
        inventory = outputs["inventory"]["all"]
        self.ssh_vars = inventory.get("vars") or {}
        if not self.ssh_vars.get("ansible_user"):
            raise RunbookError("the stack's inventory has no SSH settings: the stack needs sovcloud:hosts")
        self.hosts = {name: hv for group in inventory["children"].values()
                      for name, hv in (group.get("hosts") or {}).items() if hv}

    def _ssh(self, ip: str, cmd: str, data: bytes | None = None, timeout: float = 60) -> bytes:
        v = self.ssh_vars
        args = ["ssh", "-i", v["ansible_ssh_private_key_file"], "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-o", "LogLevel=ERROR", *shlex.split(v.get("ansible_ssh_common_args") or ""),
                f"{v['ansible_user']}@{ip}", cmd]
        r = subprocess.run(args, input=data, capture_output=True, timeout=timeout, check=False)
        if r.returncode != 0:
            raise RunbookError(f"{ip}: `{cmd[:80]}` failed ({r.returncode}): {r.stderr.decode().strip()[-400:]}")
        return r.stdout

    def workers(self, site: str) -> list[str]:
        return sorted(h["ansible_host"] for h in self.hosts.values() if h["site"] == site and h["role"] == "worker")

    def gateway(self, site: str) -> tuple[str, str]:
        """(site address for ssh, Internet address the published hostname is served on)."""
        gw = self.sites[site]["gateway"]
        return gw["address"], gw["public_address"]

    def _route(self, site: str, svc: Service) -> str:
        upstream = f"sovcloud_published_{svc.name.replace('-', '_')}"
        # `listen 443` as the route agent's servers: they share the socket, SNI picks the server. The TLS
        # versions are the gateway's floor (nginx.conf, the stack's gateway.tls_min_version).
        lines = [f"# Published service {svc.name} while {site} is active; written by dr/runbook.py.",
                 *gateway_routes.upstream_block(upstream, [f"{ip}:{svc.port}" for ip in self.workers(site)]),
                 *gateway_routes.server_block(svc.hostname, ["443"], f"{PUBLISHED_CERTS}/{svc.hostname}.crt",
                                              f"{PUBLISHED_CERTS}/{svc.hostname}.key", None,
                                              [("/", f"{svc.name}, restored from its backups", upstream)])]
        return "\n".join(lines) + "\n"

    def _route_file(self, svc: Service) -> str:
        return f"{ROUTES_DIR}/{svc.unit}.conf"

    def publish(self, site: str, svc: Service, data: Path) -> None:
        tar = subprocess.run(["tar", "-C", str(data), "-cf", "-", "."], capture_output=True, check=True).stdout
        d = f"{PUBLISH_DIR}/{svc.name}"
        for ip in self.workers(site):
            self._ssh(ip, f"sudo systemctl stop {svc.unit} 2>/dev/null; sudo rm -rf {d} && sudo mkdir -p {d} && "
                          f"sudo tar -C {d} -xf - && sudo systemd-run --quiet --unit={svc.unit} "
                          f"python3 -m http.server {svc.port} --bind {ip} --directory {d}", tar)
        self._ssh(self.gateway(site)[0],
                  f"sudo tee {self._route_file(svc)} >/dev/null && sudo nginx -t -q && {RELOAD_NGINX}",
                  self._route(site, svc).encode())
        # Published means served: the backends bind a moment after systemd-run returns (bounded wait).
        self.served(site, svc, "/", lambda r: r.status_code == 200, "served after publishing")

    def served(self, site: str, svc: Service, path: str, good: Callable[[httpx.Response], bool], what: str) -> None:
        """Wait (30 s at most) until site's gateway answers `path` of `svc` as `good` says."""
        try:
            until(lambda: good(self.get(site, svc, path)), seconds=30, every=0.5, what=what,
                  retry_on=(httpx.HTTPError,))
        except TimeoutError as err:
            raise RunbookError(f"{svc.hostname} at {site}'s gateway: not {err}") from None

    def unpublish(self, site: str, svc: Service) -> None:
        """Withdraw the route first (no new requests), then stop the backends and drop the data."""
        self._ssh(self.gateway(site)[0], f"sudo rm -f {self._route_file(svc)} && {RELOAD_NGINX}")
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
        ca = ssl.create_default_context(cadata=self.root_ca)
        with httpx.Client(verify=ca, timeout=10) as client:
            return client.get(f"https://{self.gateway(site)[1]}{path}", headers={"Host": svc.hostname},
                              extensions={"sni_hostname": svc.hostname})

    def serves(self, site: str, svc: Service) -> bool:
        try:
            return self.get(site, svc).status_code == 200
        except httpx.ConnectError:
            return False

    def _gateway_up(self, site: str) -> bool:
        try:
            self._ssh(self.gateway(site)[0], "systemctl is-active --quiet nginx", timeout=15)
            return True
        except (RunbookError, subprocess.TimeoutExpired):
            return False

    def _control_plane_ready(self, site: str) -> bool:
        cluster = self.sites[site]["cluster"]
        if cluster is None:
            return False
        with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig") as kc:
            kc.write(self.kubeconfigs[cluster])
            kc.flush()
            try:
                answer = k8s.api_client(kc.name).call_api(
                    "/readyz", "GET", auth_settings=["BearerToken"], _preload_content=False,
                    _return_http_data_only=True, _request_timeout=5)
            except Exception:  # noqa: BLE001 - any failure to answer is "not ready"
                return False
        return answer.status == 200 and answer.data.strip() == b"ok"

    def observe(self, dr_cfg: DrConfig, svc: Service, origin: str, roles: dict[str, str]) -> dict:
        """The state description dr.failover plans from, observed now (roles are the runbook's record)."""
        out: dict = {"sites": {}, "internet_gateway": {"routes_to": next(n for n, r in roles.items() if r == "active")}}
        for name, role in roles.items():
            s3 = dr_cfg.site(name)
            try:
                s3io.client(s3).head_bucket(Bucket=s3.bucket)
                s3_state = "up"
            except Exception:  # noqa: BLE001 - unreachable or refusing: either way not usable
                s3_state = "down"
            age = None
            if s3_state == "up":
                try:
                    ts = restore.latest_timestamp(dr_cfg, s3, origin, svc.dataset)
                    age = max(time.time() - layout.parse_stamp(ts).timestamp(), 0.0)
                except (restore.RestoreError, *s3io.S3Error):
                    pass
            out["sites"][name] = {"role": role, "gateway": "up" if self._gateway_up(name) else "down",
                                  "s3": s3_state,
                                  "control_plane": "healthy" if self._control_plane_ready(name) else "down",
                                  "backup_age_seconds": age}
        return out


def _take_over(dr_cfg: DrConfig, sites: StackSites, svc: Service, src: str, dst: str, plan: plans.Plan) -> dict:
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
    sites.served(dst, svc, f"/{sources.SENTINEL_FILE}", lambda r: r.status_code == 200 and r.text.strip() == sentinel,
                 "serving the restored data")
    t["total"] = time.monotonic() - t0
    return {"action": plan.action, "from": src, "to": dst, "steps": plan.steps, "warnings": plan.warnings,
            "state": plan.state, "executed": True,
            "restored_backup": f"{src}/{svc.dataset}@{f.manifest['timestamp']}",
            "sentinel": sentinel, "seconds": {k: round(v, 2) for k, v in t.items()}}


def failover(dr_cfg: DrConfig, sites: StackSites, svc: Service, src: str, dst: str, force: bool = False) -> dict:
    """`dst` takes over `svc` from `src` (failed or evacuated) from the newest backup held at dst."""
    roles = {s.name: "active" if s.name == src else "standby" for s in dr_cfg.sites}
    plan = plans.failover(sites.observe(dr_cfg, svc, src, roles), src, dst, dr_cfg.rpo_seconds, force)
    return _take_over(dr_cfg, sites, svc, src, dst, plan)


def failback(dr_cfg: DrConfig, sites: StackSites, svc: Service, src: str, dst: str, state: dict) -> dict:
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
