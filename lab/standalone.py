"""Standalone lab nodes for the playbook tests and the hardening benchmark: a node outside any site, its
inventory, and runs of the hardening playbook and of the compliance audit against it.

The packages the roles add come from the lab's offline apt repo (lab/packages.py; nodes have no mirror).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from infra import components, providers
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
from lab.packages import ensure_offline_repo
from lab.sshkey import ensure_key
from toolchain import REPO

PLAYBOOK = REPO / "playbooks" / "site.yml"
GROUPS = ("control_plane", "worker", "gateway")
__all__ = ["ensure_offline_repo"]


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
        "ansible_host_key_checking": False,
        "ansible_python_interpreter": "/usr/bin/python3",
        # The lab image's /home/sovadmin is root-owned until hardened (SC-HST-09 fixes it).
        "ansible_remote_tmp": "/tmp/.ansible-sovadmin",  # noqa: S108 - a path on the node
        # The lab nodes only reach the repo this machine ships them (see module docstring).
        "package_source_mirrors": [],
        "hardening_ntp_servers": ["ntp.sovcloud.lab"],
        # This machine runs the playbook and the audit: fail2ban must never ban it (SC-HST-01).
        "hardening_fail2ban_ignoreip": [str(next(ipaddress.ip_network(STANDALONE_SUBNET).hosts()))],
        # The ports the stack passes every playbook (the host firewall opens them).
        "cluster_api_port": components.API_PORT,
        "internet_gateway_proxy_port": components.EGRESS_PROXY_PORT,
        "internet_gateway_health_port": components.HEALTH_PORT,
    }
    if repo is not None:
        allvars["package_source_offline_repo"] = str(repo)
    inv = {"all": {"vars": allvars, "hosts": hosts, "children": groups}}
    path.write_text("---\n" + yaml.safe_dump(inv, sort_keys=False))
    return path


parse_recap = providers.parse_recap
ansible_env = providers.ansible_env  # the product's playbook environment (mitogen, the repo's ansible.cfg)


def run_playbook(inventory: Path, forks: int = 5, timeout: float = 1200,
                 extra: list[str] | None = None) -> tuple[subprocess.CompletedProcess[str], float, dict]:
    """The hardening playbook on standalone nodes, run as the stack runs every playbook (infra/providers.py)."""
    run = providers.run_playbook(PLAYBOOK, inventory, forks=forks, timeout=timeout, extra_args=extra or ())
    done = subprocess.CompletedProcess(["ansible-playbook", str(PLAYBOOK)], run.returncode, run.stdout, run.stderr)
    return done, run.seconds, run.recap


def run_audit(inventory: Path, report: Path, waivers: Path | None = None, hosts: str = "ansible://all",
              timeout: float = 900, extra: list[str] | None = None) -> tuple[int, list[dict], float]:
    """The compliance team's command, as a subprocess; returns (exit code, JSON results, seconds)."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(REPO / "tests" / "audit"),
           f"--hosts={hosts}", f"--ansible-inventory={inventory}", f"--audit-report={report}",
           "-o", "addopts="]
    if waivers is not None:
        cmd.append(f"--audit-waivers={waivers}")
    t0 = time.monotonic()
    r = subprocess.run([*cmd, *(extra or [])], capture_output=True, text=True, timeout=timeout,
                       env=ansible_env(), cwd=REPO)
    elapsed = time.monotonic() - t0
    data = report / "audit.json"
    if not data.exists():
        raise RuntimeError(f"audit wrote no report (rc={r.returncode}):\n{r.stdout[-3000:]}\n"
                           f"{r.stderr[-2000:]}")
    return r.returncode, json.loads(data.read_text())["results"], elapsed
