"""CLI: python -m lab up|status|down|ssh NODE [--config lab.yaml]."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from lab import api
from lab.config import LabConfigError, load
from lab.deploy import deploy
from lab.nodes import ssh_args
from lab.podman import PodmanError


def _table(rows: list[dict]) -> str:
    cols = ["site", "node", "role", "rack", "ip", "container", "ssh", "systemd", "healthy"]
    cells = [cols] + [["-" if r[c] is None else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab", description="sovcloud podman lab")
    p.add_argument("--config", help="topology YAML (default lab/lab.yaml)")
    sub = p.add_subparsers(dest="cmd", required=True)
    upp = sub.add_parser("up", help="create or converge the lab, then deploy the reference cloud on it")
    upp.add_argument("--infrastructure-only", action="store_true",
                     help="only the lab's hardware, no `pulumi up` (hardening, control planes, tenants, backup)")
    st = sub.add_parser("status", help="table of nodes and their health")
    st.add_argument("--json", action="store_true")
    dn = sub.add_parser("down", help="remove everything `up` created")
    dn.add_argument("--standalone", action="store_true", help="also remove run_standalone() nodes")
    s = sub.add_parser("ssh", help="ssh into a node as sovadmin")
    s.add_argument("node")
    s.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    try:
        cfg = load(a.config)
        if a.cmd == "up":
            print(json.dumps(api.up(cfg), indent=2))
            if not a.infrastructure_only:
                print(json.dumps(deploy(cfg), indent=2))
            rows = api.status(cfg) if not a.infrastructure_only else api.hardware_status(cfg)
            print(_table(rows))
            return 0 if all(r["healthy"] for r in rows) else 1
        elif a.cmd == "status":
            rows = api.status(cfg)
            print(json.dumps(rows, indent=2) if a.json else _table(rows))
            return 0 if all(r["healthy"] for r in rows) else 1
        elif a.cmd == "down":
            print(json.dumps(api.down(cfg, standalone=a.standalone)))
        else:
            site, node = cfg.find_node(a.node)
            args = ssh_args(site.ip(node))
            return subprocess.run([*args, *a.command]).returncode
    except (LabConfigError, PodmanError, TimeoutError) as e:
        print(f"lab: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
