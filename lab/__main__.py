"""CLI: python -m lab up|status|down|ssh NODE [--config lab.yaml]."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from lab import api, inventory, watch
from lab.config import ConfigError, load
from lab.deploy import deploy
from lab.nodes import ssh_args
from lab.podman import PodmanError


def _table(rows: list[dict]) -> str:
    cols = ["site", "node", "role", "rack", "ip", "container", "ssh", "systemd", "healthy"]
    cells = [cols] + [["-" if r[c] is None else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells)


def _elapsed(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _home(path: str | None) -> str:
    home = str(Path.home())
    return "-" if path is None else "~" + path[len(home):] if path.startswith(home) else path


def _aligned(table: list[list[str]]) -> list[str]:
    """Rows of cells as indented, column-aligned lines."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table]


def _monitoring_lines(sites: dict, identity: str) -> list[str]:
    """Where each site's Prometheus and Alertmanager answer, and the identity they require."""
    table = [["site", "station", "Prometheus", "Alertmanager"]]
    table += [[name, m["station"], m["prometheus"], m["alertmanager"]]
              for name, site in sites.items() if (m := site.get("monitoring"))]
    if len(table) == 1:
        return []
    identity = _home(identity)
    return (["", "Monitoring (mutual TLS: the stack's operator identity, written by `make lab`):"] + _aligned(table)
            + [f"  curl --cacert {identity}/ca.pem --cert {identity}/operator.pem --key {identity}/operator.key "
               f"{table[1][3]}/api/v2/alerts"])


def _watch_lines(sites: dict, identity: str) -> list[str]:
    table = watch.table(sites, identity)
    return ["", "Watched and restorable (each site's own Prometheus):", *_aligned(table)] if table else []


def _sites_table(sites: dict) -> list[str]:
    table = [["site", "Kubernetes API", "gateway (Internet)", "gateway (site)", "egress proxy", "published"]]
    for name, site in sites.items():
        gw = site["gateway"] or {}
        table.append([name, site["api"] or "-", gw.get("public_address", "-"), gw.get("address", "-"),
                      gw.get("egress_proxy", "-"), ", ".join(gw.get("published", [])) or "-"])
    return _aligned(table)


def stack_sites(cfg) -> dict | None:
    """The deployed stack's `sites` output (None before the first deployment)."""
    from lab.deploy import DEPLOYED_MARKER, lab_stack
    from lab.inventory import state_dir

    if not (state_dir(cfg) / DEPLOYED_MARKER).exists():
        return None
    outputs = lab_stack(cfg).outputs()
    return outputs["sites"].value if "sites" in outputs else None


def summary(hardware: dict, deployment: dict, rows: list[dict]) -> str:
    """What `make lab` ends with: where everything is, and what to try next."""
    sites, tenants = deployment["stack"]["sites"], deployment["stack"]["tenants"]
    total = hardware["seconds"] + deployment["seconds"]
    sick = [r["node"] for r in rows if not r["healthy"]]
    lines = [f"The sovereign cloud is up on the lab in {_elapsed(total)} (hardware {_elapsed(hardware['seconds'])}, "
             f"pulumi up {_elapsed(deployment['pulumi']['seconds'])}).", ""]
    identity = deployment["monitoring"]["identity"]
    lines += _sites_table(sites) + _monitoring_lines(sites, identity) + _watch_lines(sites, identity)
    lines += ["", "Admin kubeconfigs:"] + [f"  {site}: {_home(kc)}" for site, kc in deployment["kubeconfigs"].items()]
    onboarded = ", ".join(f"{t} ({' '.join(ns)})" for t, ns in tenants.items())
    lines += [f"Tenants: {onboarded}; backups and restore drills run on each site's monitoring station "
              f"(DR config {_home(deployment['dr_config'])}; operator's guide: docs/disaster-recovery.md)",
              f"Evidence signer: {_home(deployment['evidence_pki'])}",
              f"Health: {len(rows) - len(sick)}/{len(rows)} nodes and endpoints healthy"
              + (f"; NOT healthy: {', '.join(sick)}" if sick else "") + " (`make lab-status` for the table)",
              "", "Try next:",
              f"  kubectl --kubeconfig {_home(next(iter(deployment['kubeconfigs'].values())))} get nodes",
              "  an agency onboards and publishes a service: charts/workload/README.md (\"On the lab\")",
              "  the compliance audit and signed evidence bundle: README.md (\"Compliance teams\")",
              "  python -m lab ssh astana-gw     make lab-status     make lab-down"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab", description="sovcloud podman lab")
    p.add_argument("--config", help="topology YAML (default lab/lab.yaml)")
    sub = p.add_subparsers(dest="cmd", required=True)
    upp = sub.add_parser("up", help="create or converge the lab, then deploy the reference cloud on it")
    upp.add_argument("--infrastructure-only", action="store_true",
                     help="only the lab's hardware, no `pulumi up` (hardening, control planes, tenants, backup)")
    upp.add_argument("--json", action="store_true", help="print what was made as JSON instead of a summary")
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
            hardware = api.up(cfg)
            deployment = None if a.infrastructure_only else deploy(cfg)
            rows = api.hardware_status(cfg) if a.infrastructure_only else api.status(cfg)
            if a.json:
                print(json.dumps({"hardware": hardware, "deployment": deployment}, indent=2))
            elif deployment is None:
                print(_table(rows))
            else:
                print(summary(hardware, deployment, rows))
            return 0 if all(r["healthy"] for r in rows) else 1
        elif a.cmd == "status":
            rows = api.status(cfg)
            sites = stack_sites(cfg)
            if a.json:
                print(json.dumps({"nodes": rows, "sites": sites}, indent=2))
            else:
                print(_table(rows))
                if sites:
                    print("\nWhat the stack deployed (routes CA of each cluster: `pulumi stack output routes_ca`):")
                    identity = str(inventory.state_dir(cfg) / "monitoring")
                    print("\n".join(_sites_table(sites) + _monitoring_lines(sites, identity)
                                    + _watch_lines(sites, identity)))
            return 0 if all(r["healthy"] for r in rows) else 1
        elif a.cmd == "down":
            print(json.dumps(api.down(cfg, standalone=a.standalone)))
        else:
            nodes = [n.name for s in cfg.sites for n in s.nodes]
            if a.node not in nodes:
                # The command line's mistake, not the config's: named before anything connects.
                raise ConfigError([("NODE", f"no node named {a.node!r} in the lab; use one of {nodes}")],
                                  "python -m lab ssh arguments")
            site, node = cfg.find_node(a.node)
            args = ssh_args(site.ip(node))
            return subprocess.run([*args, *a.command]).returncode
    except (ConfigError, PodmanError, TimeoutError) as e:
        print(f"lab: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
