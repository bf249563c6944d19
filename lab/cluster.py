"""Each site's HA Kubernetes control plane: project PKI, `ansible-playbook playbooks/cluster.yml`, admin
kubeconfig reachable from the host through the site's API load balancer (on the gateway).

State per site in the instance's state dir (inventory.state_dir), reused when present so re-runs change nothing:
  <site>/  pki/        etcd and kubernetes CAs, leaf certificates, service-account key pair, encryption key
  <site>/  kubeconfig/ admin.conf (host -> LB), controller-manager.conf, scheduler.conf (node -> local apiserver)
"""

from __future__ import annotations

import base64
import os
import secrets
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infra import pki
from lab import inventory
from lab.config import LabConfig, Site
from lab.nodes import ssh
from lab.podman import progress
from toolchain import HOME

REPO = Path(__file__).resolve().parent.parent
PLAYBOOK = REPO / "playbooks" / "cluster.yml"
API_PORT = 6443
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the in-cluster `kubernetes` Service
ROTATE_BEFORE_DAYS = 30
HAPROXY_DEBS = ["haproxy", "liblua5.3-0", "libopentracing-c-wrapper0", "libopentracing1"]


def site_dir(site: Site | str, state_dir: Path | None = None) -> Path:
    return (state_dir or inventory.STATE_DIR) / (site if isinstance(site, str) else site.name)


def api_endpoint(site: Site) -> str:
    return f"https://{site.ip(site.gateway)}:{API_PORT}"


def control_plane(site: Site) -> list:
    return [n for n in site.nodes if n.role == "control-plane"]


# --- PKI ---------------------------------------------------------------------------------------------

def _load(d: Path, name: str) -> pki.KeyPair | None:
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    if crt.exists() and key.exists():
        return pki.KeyPair(crt.read_text(), key.read_text())
    return None


def _save(d: Path, name: str, kp: pki.KeyPair) -> pki.KeyPair:
    (d / f"{name}.crt").write_text(kp.cert_pem)
    key = d / f"{name}.key"
    key.touch(mode=0o600)
    key.write_text(kp.key_pem)
    return kp


def _ensure(d: Path, name: str, make) -> pki.KeyPair:
    kp = _load(d, name)
    if kp is None or pki.needs_rotation(kp.cert_pem, ROTATE_BEFORE_DAYS):
        kp = _save(d, name, make())
    return kp


def ensure_pki(cfg: LabConfig, site: Site, state_dir: Path | None = None) -> Path:
    """Site root CA -> intermediate etcd CA and kubernetes CA -> leaves. Idempotent (files are reused).

    Components trust only the issuing intermediate, never the root: a cert from the etcd CA must not
    authenticate to the apiserver just because both chain to the same root.
    """
    d = site_dir(site, state_dir or inventory.state_dir(cfg)) / "pki"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    root = _ensure(d, "root-ca", lambda: pki.create_root_ca(f"sovcloud {site.name} root CA"))
    etcd_ca = _ensure(d, "etcd-ca", lambda: pki.create_intermediate_ca(root, f"{site.name} etcd CA"))
    kube_ca = _ensure(d, "kubernetes-ca",
                      lambda: pki.create_intermediate_ca(root, f"{site.name} kubernetes CA"))
    lb_ip = site.ip(site.gateway)
    for n in control_plane(site):
        ip = site.ip(n)
        # One cert per member for both roles: etcd peers authenticate each other with client auth.
        _ensure(d, f"etcd-{n.name}", lambda n=n, ip=ip: pki.issue_certificate(
            etcd_ca, n.name, dns_names=(n.name, "localhost"), ip_addresses=(ip, "127.0.0.1"),
            server=True, client=True))
        _ensure(d, f"apiserver-{n.name}", lambda n=n, ip=ip: pki.issue_certificate(
            kube_ca, "kube-apiserver", server=True,
            dns_names=(n.name, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local"),
            ip_addresses=(ip, lb_ip, SERVICE_IP, "127.0.0.1")))
    _ensure(d, "apiserver-etcd-client", lambda: pki.issue_certificate(
        etcd_ca, "kube-apiserver-etcd-client", server=False, client=True))
    _ensure(d, "apiserver-kubelet-client", lambda: pki.issue_certificate(
        kube_ca, "kube-apiserver-kubelet-client", organization="kubeadm:cluster-admins", server=False,
        client=True))
    clients = {"admin": ("kubernetes-admin", "system:masters"),
               "controller-manager": ("system:kube-controller-manager", None),
               "scheduler": ("system:kube-scheduler", None)}
    for name, (cn, org) in clients.items():
        _ensure(d, name, lambda cn=cn, org=org: pki.issue_certificate(
            kube_ca, cn, organization=org, server=False, client=True))
    if not (d / "sa.key").exists():
        key = ec.generate_private_key(ec.SECP256R1())
        (d / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        (d / "sa.key").touch(mode=0o600)
        (d / "sa.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    # SC-DATA-02: the secrets encryption key is made once per site; losing it loses every secret.
    enc = d / "encryption-key"
    if not enc.exists():
        enc.touch(mode=0o600)
        enc.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    return d


def _kubeconfig(server: str, ca_pem: str, kp: pki.KeyPair, user: str, cluster: str) -> str:
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": cluster,
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(kp.cert_pem),
                                          "client-key-data": b64(kp.key_pem)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
    }, sort_keys=False)


def write_kubeconfigs(site: Site, state_dir: Path | None = None) -> Path:
    """admin.conf goes through the LB (usable from the host); the components talk to their local apiserver."""
    p = site_dir(site, state_dir) / "pki"
    kc = site_dir(site, state_dir) / "kubeconfig"
    kc.mkdir(parents=True, exist_ok=True)
    os.chmod(kc, 0o700)
    ca = (p / "kubernetes-ca.crt").read_text()
    targets = {"admin": (api_endpoint(site), "kubernetes-admin"),
               "controller-manager": (f"https://127.0.0.1:{API_PORT}", "system:kube-controller-manager"),
               "scheduler": (f"https://127.0.0.1:{API_PORT}", "system:kube-scheduler")}
    # Clients on the host get the chain up to the site root: OpenSSL-based ones (Python's kubernetes client,
    # the Pulumi dynamic provider) do not accept an intermediate alone as a trust anchor, Go does.
    chain = ca + (p / "root-ca.crt").read_text()
    for name, (server, user) in targets.items():
        text = _kubeconfig(server, chain if name == "admin" else ca, _load(p, name), user, site.name)
        f = kc / f"{name}.conf"
        if not f.exists() or f.read_text() != text:
            f.touch(mode=0o600)
            f.write_text(text)
    return kc / "admin.conf"


# --- packages for the LB -----------------------------------------------------------------------------

def ensure_haproxy_debs(state_dir: Path | None = None) -> Path:
    """haproxy and the libraries the node image lacks, fetched once with the host's apt (nodes are offline)."""
    d = (state_dir or inventory.STATE_DIR).parent / "debs-haproxy"
    if d.exists() and len(list(d.glob("*.deb"))) == len(HAPROXY_DEBS):
        return d
    d.mkdir(parents=True, exist_ok=True)
    progress("apt-get download haproxy (once)")
    r = subprocess.run(["apt-get", "download", *HAPROXY_DEBS], cwd=d, capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0 or len(list(d.glob("*.deb"))) != len(HAPROXY_DEBS):
        raise RuntimeError(f"apt-get download {' '.join(HAPROXY_DEBS)} failed in {d}: {r.stderr.strip()}")
    return d


# --- Ansible -----------------------------------------------------------------------------------------

def write_vars(cfg: LabConfig, state_dir: Path | None = None) -> Path:
    sd = state_dir or inventory.state_dir(cfg)
    data = {
        "cluster_state_dir": str(sd),
        "cluster_bin_dir": str(HOME / "bin"),
        "cluster_etcd_bin_dir": "/usr/bin",
        "cluster_haproxy_deb_dir": str(ensure_haproxy_debs(sd)),
        "cluster_api_port": API_PORT,
        "cluster_service_cidr": SERVICE_CIDR,
    }
    path = sd / "cluster-vars.yml"
    path.write_text("---\n# Generated by lab/cluster.py; do not edit.\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def run_playbook(cfg: LabConfig, limit: str | None = None, timeout: float = 1200,
                 state_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    sd = state_dir or inventory.state_dir(cfg)
    inv = inventory.write(cfg, sd)
    extra = write_vars(cfg, sd)
    ansible = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "ansible-playbook"
    cmd = [str(ansible) if ansible.exists() else "ansible-playbook", "-i", str(inv), "-e", f"@{extra}",
           str(PLAYBOOK)]
    if limit:
        cmd += ["--limit", limit]
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_ROLES_PATH": str(REPO / "playbooks" / "roles")}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


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


def bootstrap(cfg: LabConfig, state_dir: Path | None = None) -> dict[str, str]:
    """PKI, playbook, /readyz through each site's LB; returns {site: admin kubeconfig path}."""
    t0 = time.monotonic()
    state_dir = state_dir or inventory.state_dir(cfg)
    for site in cfg.sites:
        ensure_pki(cfg, site, state_dir)
        write_kubeconfigs(site, state_dir)
    progress("ansible-playbook playbooks/cluster.yml")
    r = run_playbook(cfg, state_dir=state_dir)
    if r.returncode != 0:
        tail = "\n".join(r.stdout.splitlines()[-40:])
        raise RuntimeError(f"ansible-playbook {PLAYBOOK.name} failed (rc={r.returncode}):\n{tail}\n{r.stderr}")
    out = {}
    for site in cfg.sites:
        kc = write_kubeconfigs(site, state_dir)
        wait_ready(site, state_dir)
        out[site.name] = str(kc)
    progress(f"clusters ready in {round(time.monotonic() - t0, 1)}s: {out}")
    return out


def endpoints(cfg: LabConfig, state_dir: Path | None = None) -> list[dict]:
    """For `lab status`: one row per site with its API endpoint, readiness and admin kubeconfig."""
    rows = []
    state_dir = state_dir or inventory.state_dir(cfg)
    for site in cfg.sites:
        kc = site_dir(site, state_dir) / "kubeconfig" / "admin.conf"
        rows.append({"site": site.name, "api": api_endpoint(site), "kubeconfig": str(kc) if kc.exists() else None,
                     "ready": kc.exists() and readyz(site, state_dir, timeout=3)})
    return rows
