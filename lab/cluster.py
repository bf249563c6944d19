"""Each site's HA Kubernetes control plane as seen from the host: API endpoint (the LB on the gateway),
readiness, the LB's view of its servers, and the .deb files the offline gateways need for the LB.

The control plane itself is installed by `pulumi up` of the lab stack (infra/components.py `SiteHosts`
runs playbooks/cluster.yml with the cluster's Pulumi-issued PKI), which writes per site into the lab
instance's state dir (inventory.state_dir):
  <site>/  pki/        CA certificates, leaf certificates and keys the playbook installs (mode 0600)
  <site>/  kubeconfig/ admin.conf (host -> LB), controller-manager.conf, scheduler.conf (node -> local apiserver)
"""

from __future__ import annotations

import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from lab import inventory, oci
from lab.config import LabConfig, Site
from lab.nodes import ssh
from lab.podman import progress

API_PORT = 6443
SAMPLE_IMAGE = "sovcloud.local/sample-web:1"
IMAGES = {
    # The pod sandbox only has to hold the pod's namespaces; containerd stops it with SIGKILL.
    "pause": {"ref": "sovcloud.local/pause:1", "entrypoint": ["/bin/busybox", "sleep", "2147483647"]},
    # The sample agency workload: a static page over HTTP on 8080, non-root, read-only root filesystem.
    "sample-web": {"ref": SAMPLE_IMAGE, "entrypoint": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
                   "files": {f"/www/{page}": oci.File(b"sovcloud sample workload\n")
                             for page in ("index.html", "healthz", "readyz")},  # the workload chart's probes
                   "ports": [8080]},
}


def site_dir(site: Site | str, state_dir: Path | None = None) -> Path:
    return (state_dir or inventory.STATE_DIR) / (site if isinstance(site, str) else site.name)


def api_endpoint(site: Site) -> str:
    return f"https://{site.ip(site.gateway)}:{API_PORT}"


def control_plane(site: Site) -> list:
    return [n for n in site.nodes if n.role == "control-plane"]


# --- images for the offline nodes ---------------------------------------------------------

def ensure_debs(name: str, packages: list[str], state_dir: Path | None = None) -> Path:
    """`packages` as .deb files in <lab cache>/debs-<name>, fetched once with the host's apt (nodes are offline)."""
    d = (state_dir or inventory.STATE_DIR).parent / f"debs-{name}"
    if d.exists() and len(list(d.glob("*.deb"))) == len(packages):
        return d
    d.mkdir(parents=True, exist_ok=True)
    progress(f"apt-get download {' '.join(packages)} (once)")
    r = subprocess.run(["apt-get", "download", *packages], cwd=d, capture_output=True, text=True, timeout=300)
    if r.returncode != 0 or len(list(d.glob("*.deb"))) != len(packages):
        raise RuntimeError(f"apt-get download {' '.join(packages)} failed in {d}: {r.stderr.strip()}")
    return d


def images_dir(state_dir: Path | None = None) -> Path:
    """Where `ensure_images` writes the archives (the stack's `cluster_image_dir`)."""
    return (state_dir or inventory.STATE_DIR).parent / "images"


def ensure_images(state_dir: Path | None = None) -> Path:
    """The OCI archives workers import (kube_node role): the pod sandbox and the sample workload, both one
    static busybox from Debian. Built every time (well under a second): the archives are reproducible, so
    unchanged images give identical files and the role imports nothing."""
    d = images_dir(state_dir)
    deb = next(ensure_debs("busybox", ["busybox-static"], state_dir).glob("*.deb"))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        busybox = oci.File((Path(tmp) / "bin" / "busybox").read_bytes(), 0o755)
    for name, image in IMAGES.items():
        oci.build(oci.Image(image["ref"], {"/bin/busybox": busybox, **image.get("files", {})},
                            image["entrypoint"], exposed_ports=image.get("ports", [])), d / f"{name}.tar")
    return d


def ssl_context(site: Site, admin: bool = True, state_dir: Path | None = None) -> ssl.SSLContext:
    """Trusts the site's kubernetes CA alone (an intermediate: OpenSSL needs PARTIAL_CHAIN to anchor there,
    Go clients do it by default); with admin=True it presents the admin client certificate."""
    p = site_dir(site, state_dir) / "pki"
    ctx = ssl.create_default_context(cafile=str(p / "kubernetes-ca.crt"))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if admin:
        ctx.load_cert_chain(str(p / "admin.crt"), str(p / "admin.key"))
    return ctx


def readyz(site: Site, state_dir: Path | None = None, timeout: float = 5) -> bool:
    """GET /readyz through the LB as the admin (anonymous requests are rejected by design)."""
    try:
        r = httpx.get(f"{api_endpoint(site)}/readyz", verify=ssl_context(site, state_dir=state_dir),
                      timeout=timeout)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def wait_ready(site: Site, state_dir: Path | None = None, deadline_s: float = 180) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        if readyz(site, state_dir):
            return round(time.monotonic() - t0, 1)
        time.sleep(2)
    raise TimeoutError(f"{site.name}: {api_endpoint(site)}/readyz not ready after {deadline_s}s "
                       f"(look at `journalctl -u kube-apiserver` on the control-plane nodes)")


LB_STATS_SOCKET = "/run/haproxy/stats.sock"  # api_lb_stats_socket in playbooks/roles/api_lb
# srv_op_state in haproxy's `show servers state`: 2 = running (passes its health checks).
_LB_QUERY = ("import socket; s = socket.socket(socket.AF_UNIX); s.connect({sock!r}); "
             "s.sendall(b'show servers state kube-apiserver\\n'); print(s.makefile().read())")


def lb_servers(site: Site) -> dict[str, bool]:
    """{control-plane node: in service} as the site's API LB sees it (haproxy runtime API on the gateway)."""
    r = ssh(site.ip(site.gateway), f"sudo python3 -c \"{_LB_QUERY.format(sock=LB_STATS_SOCKET)}\"", timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"{site.gateway.name}: haproxy stats socket {LB_STATS_SOCKET}: {r.stderr.strip()}")
    # Columns: be_id be_name srv_id srv_name srv_addr srv_op_state ...
    rows = [line.split() for line in r.stdout.splitlines() if line and line[0].isdigit()]
    return {row[3]: row[5] == "2" for row in rows if len(row) > 5}


def endpoints(cfg: LabConfig, state_dir: Path | None = None) -> list[dict]:
    """For `lab status`: one row per site with its API endpoint, readiness and admin kubeconfig."""
    rows = []
    state_dir = state_dir or inventory.state_dir(cfg)
    for site in cfg.sites:
        kc = site_dir(site, state_dir) / "kubeconfig" / "admin.conf"
        rows.append({"site": site.name, "api": api_endpoint(site), "kubeconfig": str(kc) if kc.exists() else None,
                     "ready": kc.exists() and readyz(site, state_dir, timeout=3)})
    return rows
