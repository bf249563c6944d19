"""Hardening bench on lab nodes: Lynis hardening index before/after, playbook and audit wall time,
N vs 2N nodes (forks = node count). Target: Lynis >= 85 on a hardened node.

    .venv/bin/python -m bench.bench_hardening [--n 2]

Bounded: at most 2N (default 4) 512 MiB nodes, removed at the end.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

from lab.nodes import ssh_args
from tests.playbooks import labsupport as ls

GROUPS = ["control_plane", "worker", "gateway"]
WAIVERS = Path(__file__).resolve().parents[1] / "tests" / "playbooks" / "lab-waivers.yml"


def lynis_index(ip: str) -> int:
    """Copy this machine's lynis (a shell program) to the node and run the quick audit there, as root."""
    tar = subprocess.run(["tar", "-C", "/", "-cf", "-", "usr/sbin/lynis", "usr/share/lynis", "etc/lynis"],
                         capture_output=True, check=True).stdout
    subprocess.run([*ssh_args(ip), "sudo tar -C / -xf -"], input=tar, check=True, capture_output=True)
    r = subprocess.run([*ssh_args(ip), "sudo lynis audit system --quick --no-colors --no-log"],
                       capture_output=True, text=True, timeout=600)
    m = re.search(r"Hardening index\s*:\s*(\d+)", r.stdout)
    if not m:
        raise RuntimeError(f"lynis on {ip} printed no hardening index (rc={r.returncode}): {r.stdout[-1500:]}")
    return int(m.group(1))


def round_for(n: int, repo: Path, work: Path, lynis: bool) -> dict:
    # hx-* like the lab test, so the lab waivers (container-only kernel controls) apply to the audit.
    names = [f"hx-b{n}-{i}" for i in range(n)]
    try:
        t0 = time.monotonic()
        nodes = {name: (ls.start_node(name), GROUPS[i % 3]) for i, name in enumerate(names)}
        out: dict = {"nodes": n, "start_s": round(time.monotonic() - t0, 1)}
        first_ip = nodes[names[0]][0]
        if lynis:
            out["lynis_before"] = lynis_index(first_ip)
        inv = ls.write_inventory(work / f"inv{n}.yml", nodes, repo)
        r, t_play, recap = ls.run_playbook(inv, forks=n)
        if r.returncode != 0:
            raise RuntimeError(f"playbook failed on {n} nodes:\n{r.stdout[-3000:]}")
        r2, t_play2, recap2 = ls.run_playbook(inv, forks=n)
        rc, results, t_audit = ls.run_audit(inv, work / f"audit{n}", WAIVERS, extra=["--sudo"])
        out.update(playbook_s=round(t_play, 1), playbook_rerun_s=round(t_play2, 1),
                   rerun_changed=sum(v["changed"] for v in recap2.values()), audit_s=round(t_audit, 1),
                   audit_rc=rc, audit_fail=sum(x["result"] == "fail" for x in results))
        if lynis:
            out["lynis_after"] = lynis_index(first_ip)
        return out
    finally:
        for name in names:
            ls.remove_node(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2, help="small round size; the large round is 2N (max 3)")
    args = ap.parse_args()
    if not 1 <= args.n <= 3:
        ap.error("--n must be 1..3 (the lab shares a 2-core machine)")
    repo = ls.ensure_offline_repo()
    with tempfile.TemporaryDirectory(prefix="bench-hardening-") as tmp:
        small = round_for(args.n, repo, Path(tmp), lynis=True)
        big = round_for(2 * args.n, repo, Path(tmp), lynis=False)
    print(f"Lynis hardening index: before {small['lynis_before']}  after {small['lynis_after']}  (target >= 85)")
    print(f"{'nodes':>5} {'playbook s':>10} {'s/node':>7} {'re-run s':>8} {'re-run changed':>14} "
          f"{'audit s':>7} {'audit fails':>11}")
    for r in (small, big):
        print(f"{r['nodes']:>5} {r['playbook_s']:>10} {r['playbook_s'] / r['nodes']:>7.1f} "
              f"{r['playbook_rerun_s']:>8} {r['rerun_changed']:>14} {r['audit_s']:>7} {r['audit_fail']:>11}")
    print(f"2N/N playbook wall-time ratio: {big['playbook_s'] / small['playbook_s']:.2f}  "
          f"audit ratio: {big['audit_s'] / small['audit_s']:.2f}")


if __name__ == "__main__":
    main()
