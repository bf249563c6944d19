"""Each site's HA Kubernetes control plane as seen from the host: API endpoint (the LB on the gateway),
readiness, the LB's view of its servers, and the .deb files the offline gateways need for the LB.

The control plane itself is installed by `pulumi up` of the lab stack (infra/components.py `SiteHosts`
runs playbooks/cluster.yml with the cluster's Pulumi-issued PKI), which writes per site into the lab
instance's state dir (inventory.state_dir):
  <site>/  pki/        CA certificates, leaf certificates and keys the playbook installs (mode 0600)
  <site>/  kubeconfig/ admin.conf (host -> LB), controller-manager.conf, scheduler.conf (node -> local apiserver)
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from common.wait import until
from lab import inventory, oci
from lab.config import LabConfig, Site
from lab.nodes import ssh
from lab.podman import progress
from toolchain import BIN, pins

API_PORT = 6443


def until_sigterm(command: str) -> list[str]:
    """An entrypoint running `command` (busybox applets) until the pod is deleted. As a container's PID 1 a
    program gets only the signals it handles, and busybox's httpd and sleep handle no SIGTERM: each deletion
    would wait out the pod's whole grace period (30 s) before the SIGKILL. The shell handles it and exits."""
    return ["/bin/busybox", "sh", "-c", f"trap 'exit 0' TERM; {command} & wait"]


SAMPLE_IMAGE = "sovcloud.local/sample-web:1"
# Images of one binary `make setup` built (static: alone in the image), run by the stack's in-cluster platform:
# archive name -> (binary, image ref). The archive names are the ones infra/cluster_dns.py and
# infra/cluster_storage.py look for.
BINARY_IMAGES = {
    "coredns": ("coredns", f"sovcloud.local/coredns:{pins.COREDNS}"),
    "local-path-provisioner": ("local-path-provisioner",
                               f"sovcloud.local/local-path-provisioner:{pins.LOCAL_PATH_PROVISIONER}"),
}
IMAGES = {
    # The pod sandbox only has to hold the pod's namespaces; containerd stops it with SIGKILL.
    "pause": {"ref": "sovcloud.local/pause:1", "entrypoint": ["/bin/busybox", "sleep", "2147483647"]},
    # The sample agency workload: a static page over HTTP on 8080, non-root, read-only root filesystem.
    "sample-web": {"ref": SAMPLE_IMAGE, "entrypoint": until_sigterm("/bin/busybox httpd -f -p 8080 -h /www"),
                   "files": {f"/www/{page}": oci.File(b"sovcloud sample workload\n")
                             for page in ("index.html", "healthz", "readyz")},  # the workload chart's probes
                   "ports": [8080]},
    # The storage provisioner's helper pods: a shell to make and remove volume directories on a worker.
    "busybox": {"ref": "sovcloud.local/busybox:1", "entrypoint": ["/bin/sh"], "user": "0:0",
                "links": {f"/bin/{applet}": "busybox" for applet in ("sh", "mkdir", "rm", "ls")}},
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


def static_busybox(state_dir: Path | None = None) -> oci.File:
    """Debian's static busybox (package busybox-static), as an image file: the one program of the images here."""
    deb = next(ensure_debs("busybox", ["busybox-static"], state_dir).glob("*.deb"))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        return oci.File((Path(tmp) / "bin" / "busybox").read_bytes(), 0o755)


def with_libraries(programs: list[Path], root: Path = Path("/")) -> dict[str, oci.File]:
    """Programs and every shared library they load (ldd), at their paths in the image. Programs and libraries
    under `root` (packages unpacked there) keep their path below it; the rest come from the host, Debian 12 as the
    nodes are."""
    unpacked = root != Path("/")
    env = {"LD_LIBRARY_PATH": ":".join(str(root / d) for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"))}
    files = {}
    for program in programs:
        out = subprocess.run(["ldd", str(program)], capture_output=True, text=True, check=True,
                             env={**os.environ, **env} if unpacked else None).stdout
        if "not found" in out:
            raise FileNotFoundError(f"{program} needs libraries the host lacks:\n{out}")
        for path in [program, *sorted({Path(m) for m in re.findall(r"(/\S+)", out)})]:
            inside = f"/{path.relative_to(root)}" if unpacked and path.is_relative_to(root) else str(path)
            files[inside] = oci.File(path.resolve().read_bytes(), 0o755)
    return files


def _stale(archives: list[Path], inputs: list[Path]) -> bool:
    """An archive is missing or older than something it is built from: build it again."""
    newest = max(p.stat().st_mtime for p in inputs)
    return not all(a.exists() and a.stat().st_mtime >= newest for a in archives)


def images_dir(state_dir: Path | None = None) -> Path:
    """Where `ensure_images` writes the archives (the stack's `cluster_image_dir`)."""
    return (state_dir or inventory.STATE_DIR).parent / "images"


def ensure_images(state_dir: Path | None = None) -> Path:
    """The OCI archives workers import (kube_node role): the pod sandbox, the sample workload and the storage
    helper, each one static busybox from Debian (built every time, well under a second), and the clusters' DNS
    and storage provisioner. The archives are reproducible, so unchanged images give identical files and the
    role imports nothing."""
    d = images_dir(state_dir)
    busybox = static_busybox(state_dir)
    for name, image in IMAGES.items():
        oci.build(oci.Image(image["ref"], {"/bin/busybox": busybox, **image.get("files", {})},
                            image["entrypoint"], user=image.get("user", oci.Image.user),
                            exposed_ports=image.get("ports", []), links=image.get("links", {})), d / f"{name}.tar")
    for name, (binary, ref) in BINARY_IMAGES.items():
        path = BIN / binary
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: `make setup` builds it")
        archive = d / f"{name}.tar"
        if _stale([archive], [path]):  # seconds to compress: once
            oci.build(oci.Image(ref, {f"/{binary}": oci.File(path.read_bytes(), 0o755)}, [f"/{binary}"], env=[]),
                      archive)
    sample_app_images(d, busybox, state_dir)
    return d


# The sample agency application of charts/workload/examples: a web tier that records each visit in its database
# and answers the count, and the database, PostgreSQL from Debian (the workload chart runs it as a StatefulSet).
SAMPLE_DB_IMAGE = "sovcloud.local/sample-db:15"
SAMPLE_APP_IMAGE = "sovcloud.local/sample-app:1"
PG = "/usr/lib/postgresql/15"
# The uid the workload chart runs as (runAsUser), named: initdb and psql look their user up.
SAMPLE_USER = b"app:x:10001:10001::/tmp:/bin/sh\n"
SAMPLE_DB_ENTRY = b"""#!/bin/sh
# PostgreSQL with its data on the StatefulSet's volume ($PGDATA), initialised on first start; the superuser's
# password is the agency's Secret, mounted at /run/secrets/db. Connections from the pod network need it.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb --pgdata="$PGDATA" --username=postgres --pwfile=/run/secrets/db/password --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-instructions
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c port=5432 -c unix_socket_directories=/tmp
"""
SAMPLE_APP_VISIT = b"""#!/bin/sh
# One visit: recorded in the database at the Service $DB_HOST, and the number of visits so far answered.
printf 'Content-Type: text/plain\r\n\r\n'
export PGPASSWORD="$(cat /run/secrets/db/password)" PGCONNECT_TIMEOUT=5 PGOPTIONS='-c client_min_messages=warning'
exec psql -h "$DB_HOST" -U postgres -tAq \
  -c 'CREATE TABLE IF NOT EXISTS visits (at timestamptz NOT NULL DEFAULT now())' \
  -c 'INSERT INTO visits DEFAULT VALUES' -c 'SELECT count(*) FROM visits' 2>&1
"""


def sample_app_images(d: Path, busybox: oci.File, state_dir: Path | None = None) -> None:
    """sample-db.tar and sample-app.tar: PostgreSQL 15 and its client from Debian's packages, with the libraries
    they load, on Debian's static busybox (the shell and the web server)."""
    debs = ensure_debs("postgresql", ["postgresql-15", "postgresql-client-15", "libpq5"], state_dir)
    archives = [d / "sample-db.tar", d / "sample-app.tar"]
    if not _stale(archives, [*debs.glob("*.deb"), Path(__file__)]):  # this file: the scripts and file lists
        return  # tens of seconds to unpack and compress: only when something changed
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        shell = {"/bin/busybox": busybox, "/etc/passwd": oci.File(b"root:x:0:0::/root:/bin/sh\n" + SAMPLE_USER),
                 "/etc/group": oci.File(b"root:x:0:\napp:x:10001:\n")}
        links = {f"/bin/{a}": "busybox" for a in ("sh", "cat", "mkdir", "ls", "printf", "httpd", "wget")}
        env = [f"PATH={PG}/bin:/bin", "TZ=UTC"]
        # The server, and the client tools a backup dumps and restores it with.
        server = with_libraries([root / f"{PG[1:]}/bin/{b}"
                                 for b in ("postgres", "initdb", "pg_isready", "psql", "pg_dump", "pg_restore")], root)
        # initdb loads PL/pgSQL and the text search dictionaries; the rest of share/ is the catalogue's SQL.
        modules = {f"{PG}/lib/{m}": oci.File((root / f"{PG[1:]}/lib/{m}").read_bytes(), 0o755)
                   for m in ("plpgsql.so", "dict_snowball.so")}
        share = {f"/{f.relative_to(root)}": oci.File(f.read_bytes())
                 for f in (root / "usr/share/postgresql/15").rglob("*") if f.is_file() and "man" not in f.parts}
        # Debian's PostgreSQL reads time zones from the system's tzdata (the host's, as the libraries).
        zones = Path("/usr/share/zoneinfo")
        share |= {str(f): oci.File(f.read_bytes()) for f in zones.rglob("*")
                  if f.is_file() and not f.is_symlink() and f.relative_to(zones).parts[0] not in ("posix", "right")}
        oci.build(oci.Image(SAMPLE_DB_IMAGE, {**shell, **server, **modules, **share,
                                              "/usr/local/bin/sample-db": oci.File(SAMPLE_DB_ENTRY, 0o755)},
                            ["/bin/sh", "/usr/local/bin/sample-db"], user="10001:10001",
                            env=[*env, "PGDATA=/data/pgdata"], exposed_ports=[5432], links=links),
                  archives[0])
        client = with_libraries([root / f"{PG[1:]}/bin/psql"], root)
        pages = {f"/www/{p}": oci.File(b"sovcloud sample app\n") for p in ("index.html", "healthz", "readyz")}
        oci.build(oci.Image(SAMPLE_APP_IMAGE, {**shell, **client, **pages,
                                               "/www/cgi-bin/visit": oci.File(SAMPLE_APP_VISIT, 0o755)},
                            until_sigterm("/bin/busybox httpd -f -p 8080 -h /www"), user="10001:10001",
                            env=env, exposed_ports=[8080], links=links),
                  archives[1])


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
    until(lambda: readyz(site, state_dir), seconds=deadline_s, every=2,
          what=f"{site.name}: {api_endpoint(site)}/readyz ready (if not, look at `journalctl -u kube-apiserver` "
               "on the control-plane nodes)")
    return round(time.monotonic() - t0, 1)


def etcdctl(site: Site, *args: str, members: list | None = None, state_dir: Path | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """etcdctl (v3 API) on the host against `members` (default: every control-plane node of the site),
    authenticated as the apiserver's etcd client, the only client etcd trusts."""
    p = site_dir(site, state_dir) / "pki"
    eps = ",".join(f"https://{site.ip(n)}:2379" for n in members or control_plane(site))
    return subprocess.run(["etcdctl", f"--endpoints={eps}", f"--cacert={p}/etcd-ca.crt",
                           f"--cert={p}/apiserver-etcd-client.crt", f"--key={p}/apiserver-etcd-client.key",
                           "--dial-timeout=3s", "--command-timeout=5s", *args],
                          capture_output=True, timeout=timeout, env={"ETCDCTL_API": "3", "PATH": os.environ["PATH"]})


def healthy_members(health: subprocess.CompletedProcess[bytes]) -> int:
    """Healthy members in the output of `etcdctl endpoint health` (etcdctl 3.4 prints it on stderr)."""
    return (health.stdout + health.stderr).decode(errors="replace").count("is healthy")


class NoLeader(RuntimeError):
    """The members asked do not (yet) agree on one leader among them."""


def etcd_leader(site: Site, members: list | None = None, state_dir: Path | None = None):
    """The control-plane node whose etcd member leads, as every one of `members` reports it (NoLeader when
    one does not answer or they disagree, as during an election)."""
    r = etcdctl(site, "endpoint", "status", "-w", "json", members=members, state_dir=state_dir)
    if r.returncode != 0:
        raise NoLeader((r.stderr or r.stdout).decode(errors="replace").strip()[-500:])
    statuses = json.loads(r.stdout)
    leaders = {s["Status"].get("leader", 0) for s in statuses}  # 0 (left out of the JSON): no leader known
    if len(statuses) != len(members or control_plane(site)) or len(leaders) != 1 or 0 in leaders:
        raise NoLeader(f"members disagree on the etcd leader: {statuses}")
    by_ip = {site.ip(n): n for n in control_plane(site)}
    found = [by_ip[s["Endpoint"].split("//")[1].split(":")[0]] for s in statuses
             if s["Status"]["header"]["member_id"] in leaders]
    if len(found) != 1:
        raise NoLeader(f"the leader is none of the members asked: {statuses}")
    return found[0]


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
