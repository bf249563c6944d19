"""What an audit check may ask of the audited node besides its files: its role, its inventory, and the command line
a component is running with."""

from __future__ import annotations

import pytest


def only_for(node_role: str, *roles: str) -> None:
    if node_role not in roles:
        pytest.skip(f"not applicable to role {node_role}")


def inventory_var(host, name: str):
    """A host variable of the audited inventory (the stack's: gateways carry their transport and public
    addresses); None off an Ansible inventory."""
    if type(host.backend).__name__ != "AnsibleBackend":
        return None
    return host.ansible.get_variables().get(name)


def process_args(host, name: str, evidence: list[str]) -> list[str]:
    """The command line of the running `name` (its systemd unit's main process, else the process of that name):
    what the component really runs with, whatever its unit file or manifest says now."""
    pid = host.run(f"systemctl show -p MainPID --value {name}").stdout.strip()
    if pid in ("", "0"):
        # /proc/PID/comm keeps 15 characters of the name (kube-controller-manager -> kube-controller).
        pid = host.run(f"for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = '{name[:15]}' ] && "
                       "echo ${p#/proc/} && break; done").stdout.strip()
    assert pid, f"{name} is not running on this node"
    args = host.run(f"tr '\\0' '\\n' < /proc/{pid}/cmdline").stdout.splitlines()
    evidence.append(f"{name} (pid {pid}): {' '.join(args)[:1500]}")
    assert args, f"cannot read the command line of {name} (pid {pid}): run the audit with --sudo"
    return args


def flags(args: list[str]) -> dict[str, str]:
    """--name=value flags of a command line, the last one winning as in the components' flag parser. A bare
    `--name` is "" (for a boolean flag that means true, so it never reads as "false")."""
    return {name: value for name, _, value in (a.partition("=") for a in args if a.startswith("--"))}
