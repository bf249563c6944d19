"""`make lab` with and without node hardening, side by side in one run, and the Lynis hardening index of one
hardened node per role. Targets (issue 14): hardening 12 nodes adds at most 5 minutes to a fresh lab on 2
cores; Lynis >= 85 on every role.

    .venv/bin/python -m bench.bench_lab

Runs on a lab instance of its own (`benchlab`, 10.218.x: the default lab is left alone), one deployment at
a time, each from fresh machines (the node image stays cached, as after a first `make lab`), removed after.
"""

from __future__ import annotations

import time

from bench.bench_hardening import lynis
from lab import api
from lab.config import parse, raw
from lab.deploy import deploy, lab_stack
from lab.measure import memory_mib

ROLES = ["control-plane", "worker", "gateway"]
STEPS = ("hardening", "network", "control-plane", "integrity-baseline")
LYNIS_TARGET = 85
ADDED_TARGET_S = 300


def bench_config():
    data = raw()
    data["name"] = "benchlab"
    for section in [data["internet"], data["transport"], *data["sites"]]:
        section["subnet"] = section["subnet"].replace("10.210.", "10.218.")
    return parse(data, "bench topology")


def host_steps(cfg) -> dict[str, float]:
    """Seconds each Playbook resource (host step) of the last deployment took, by kind."""
    steps: dict[str, float] = {}
    for r in lab_stack(cfg).export_stack().deployment["resources"]:
        out = r.get("outputs") or {}
        name = r["urn"].rsplit("::", 1)[1]
        kind = next((k for k in STEPS if name.endswith(k)), None)
        if kind and out.get("seconds") is not None:
            steps[kind] = max(steps.get(kind, 0.0), float(out["seconds"]))  # the sites run side by side
    return steps


def one_round(cfg, harden: bool) -> dict:
    api.down(cfg)
    t0 = time.monotonic()
    hardware = api.up(cfg)
    deployment = deploy(cfg, harden=harden)
    total = time.monotonic() - t0
    out = {"harden": harden, "total_s": round(total, 1), "hardware_s": hardware["seconds"],
           "pulumi_up_s": deployment["pulumi"]["seconds"], "steps": host_steps(cfg),
           "memory_mib": round(sum(memory_mib(cfg.name).values()))}
    if harden:
        out["lynis"] = {}
        for role in ROLES:
            site = cfg.sites[0]
            node = next(n for n in site.nodes if n.role == role)
            out["lynis"][role] = (node.name, *lynis(site.ip(node)))
    return out


def main() -> None:
    cfg = bench_config()
    try:
        plain, hardened = one_round(cfg, False), one_round(cfg, True)
    finally:
        api.down(cfg)
    print(f"{'deployment':12} {'total s':>8} {'hardware s':>10} {'pulumi up s':>11} {'memory MiB':>10}  "
          "host steps (s)")
    for r in (plain, hardened):
        steps = "  ".join(f"{k} {v:.0f}" for k, v in sorted(r["steps"].items()))
        print(f"{'hardened' if r['harden'] else 'not hardened':12} {r['total_s']:>8} {r['hardware_s']:>10} "
              f"{r['pulumi_up_s']:>11} {r['memory_mib']:>10}  {steps}")
    added = hardened["total_s"] - plain["total_s"]
    print(f"hardening 12 nodes adds {added:.0f} s to a fresh lab (target <= {ADDED_TARGET_S} s): "
          f"{'met' if added <= ADDED_TARGET_S else 'NOT met'}")
    for role, (node, index, suggestions) in hardened["lynis"].items():
        print(f"Lynis hardening index, {role} ({node}): {index} (target >= {LYNIS_TARGET}): "
              f"{'met' if index >= LYNIS_TARGET else 'NOT met'}")
        for s in suggestions:
            print(f"    lynis suggestion: {s}")


if __name__ == "__main__":
    main()
