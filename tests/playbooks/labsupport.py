"""Lab plumbing for the hardening tests and bench: offline apt repo, test nodes, playbook and audit runs.

Lab nodes sit on internal podman networks with no route to a Debian mirror, exactly like an air-gapped
government node that only sees an in-country mirror. So the packages the hardening roles add are
downloaded once on this machine (same release as the node image) into a flat apt repo that the
playbook ships to the node (`hardening_apt_offline_repo_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lab.image import ensure_node_image
from lab.nodes import (
    SSH_USER,
    STANDALONE_NET,
    STANDALONE_SUBNET,
    container_ip,
    ensure_network,
    remove_standalone,
    run_node,
    wait_booted,
    wait_ssh,
)
from lab.podman import CACHE, podman
from lab.sshkey import ensure_key

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "site.yml"
# What the roles install beyond the node image (hardening), plus lynis for the bench.
REPO_PACKAGES = ["aide", "libpam-pwquality", "unattended-upgrades", "python3-apt", "lynis"]
GROUPS = ("control_plane", "worker", "gateway")


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        raise RuntimeError(f"{name} not found: install it (venv: ansible/pytest; apt: dpkg-dev for "
                           "dpkg-scanpackages)")
    return path


def ensure_offline_repo(packages: list[str] = REPO_PACKAGES) -> Path:
    """Flat apt repo (debs + Packages) with `packages` and their dependencies the node image lacks."""
    image = ensure_node_image()
    key = hashlib.sha256("\n".join([image, *sorted(packages)]).encode()).hexdigest()[:12]
    repo = CACHE / f"apt-hardening-{key}"
    if (repo / "Packages").exists():
        return repo
    installed = set(podman("run", "--rm", "--systemd=false", image, "dpkg-query", "-W",
                           "-f=${Package}\n").split())
    out = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                          "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages],
                         capture_output=True, text=True, check=True).stdout
    names = sorted({ln for ln in out.splitlines() if ln and not ln.startswith((" ", "<"))} - installed)
    # Alternatives apt would never pick on a systemd node (and that conflict with what is installed).
    names = [n for n in names if n not in {"libelogind0", "cdebconf"}]
    part = repo.with_suffix(".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    subprocess.run(["apt-get", "download", *names], cwd=part, check=True, capture_output=True, timeout=600)
    pk = subprocess.run([_tool("dpkg-scanpackages"), "--multiversion", "."], cwd=part, check=True,
                        capture_output=True, text=True).stdout
    (part / "Packages").write_text(pk)
    shutil.rmtree(repo, ignore_errors=True)
    part.rename(repo)
    return repo


def start_node(name: str, memory_mib: int = 512) -> str:
    """A standalone lab node (like `lab.nodes.run_standalone`) that may program its own firewall.

    NET_ADMIN is scoped to the node's own network namespace (the lab's gateways get the same), so
    the nftables host firewall (SC-HST-04) is really loaded and audited rather than waived.
    """
    ensure_network(STANDALONE_NET, STANDALONE_SUBNET, labels={"sovcloud.lab.kind": "standalone"})
    container = f"sovlab-sa-{name}"
    run_node(container, name, [(STANDALONE_NET, None)], memory_mib, {"role": "standalone", "node": name},
             ["--cap-add", "NET_ADMIN"])
    ip = container_ip(container, STANDALONE_NET)
    wait_ssh(ip)
    wait_booted(ip)
    return ip


def remove_node(name: str) -> None:
    remove_standalone(name)


def write_inventory(path: Path, nodes: dict[str, tuple[str, str]], repo: Path | None) -> Path:
    """nodes: name -> (ip, group). Host vars follow lab/inventory.py; the repo var makes it air-gapped."""
    groups: dict[str, dict] = {g: {"hosts": {}} for g in GROUPS}
    hosts = {}
    for name, (ip, group) in nodes.items():
        if group not in groups:
            raise ValueError(f"node {name}: group {group!r} is not one of {GROUPS}")
        groups[group]["hosts"][name] = {}
        hosts[name] = {"ansible_host": ip}
    allvars = {
        "ansible_user": SSH_USER,
        "ansible_ssh_private_key_file": str(ensure_key()),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_python_interpreter": "/usr/bin/python3",
        # The lab image's /home/sovadmin is root-owned until hardened (SC-HST-09 fixes it).
        "ansible_remote_tmp": "/tmp/.ansible-sovadmin",
        # The lab nodes only reach the repo this machine ships them (see module docstring).
        "hardening_apt_sources": [],
        "hardening_ntp_servers": ["ntp.sovcloud.lab"],
    }
    if repo is not None:
        allvars["hardening_apt_offline_repo_dir"] = str(repo)
    inv = {"all": {"vars": allvars, "hosts": hosts, "children": groups}}
    path.write_text("---\n" + yaml.safe_dump(inv, sort_keys=False))
    return path


RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable="
                   r"(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)", re.M)


def parse_recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines -> {host: {ok, changed, unreachable, failed}}."""
    return {m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
            for m in RECAP.finditer(stdout)}


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def run_playbook(inventory: Path, forks: int = 5, timeout: float = 1200,
                 extra: list[str] | None = None) -> tuple[subprocess.CompletedProcess[str], float, dict]:
    t0 = time.monotonic()
    r = subprocess.run([_tool("ansible-playbook"), "-i", str(inventory), "-f", str(forks), str(PLAYBOOK),
                        *(extra or [])], capture_output=True, text=True, timeout=timeout, env=ansible_env(),
                       cwd=ROOT)
    return r, time.monotonic() - t0, parse_recap(r.stdout)


def run_audit(inventory: Path, report: Path, waivers: Path | None = None, hosts: str = "ansible://all",
              timeout: float = 900, extra: list[str] | None = None) -> tuple[int, list[dict], float]:
    """The compliance team's command, as a subprocess; returns (exit code, JSON results, seconds)."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(ROOT / "tests" / "audit"),
           f"--hosts={hosts}", f"--ansible-inventory={inventory}", f"--audit-report={report}",
           "-o", "addopts="]
    if waivers is not None:
        cmd.append(f"--audit-waivers={waivers}")
    t0 = time.monotonic()
    r = subprocess.run([*cmd, *(extra or [])], capture_output=True, text=True, timeout=timeout,
                       env=ansible_env(), cwd=ROOT)
    elapsed = time.monotonic() - t0
    data = report / "audit.json"
    if not data.exists():
        raise RuntimeError(f"audit wrote no report (rc={r.returncode}):\n{r.stdout[-3000:]}\n"
                           f"{r.stderr[-2000:]}")
    return r.returncode, json.loads(data.read_text())["results"], elapsed
