"""Hardening bench on lab nodes: Lynis hardening index before/after, and playbook and audit wall time for
6 vs 12 nodes measured side by side in one run (forks = node count). Target: Lynis >= 85 on a hardened node.

    .venv/bin/python -m bench.bench_hardening [--sizes 6,12] [--memory-mib 384]

Bounded: one round's nodes at a time (default at most 12 x 384 MiB), removed after each round.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab import standalone as ls
from lab.nodes import ssh_args

GROUPS = ["control_plane", "worker", "gateway"]
WAIVERS = Path(__file__).resolve().parents[1] / "tests" / "playbooks" / "lab-waivers.yml"


# Lynis runs from a directory of its own on the node (its include/, plugins/ and db/ beside the script, the
# layout of a release tarball): nothing lands in the paths the node's file-integrity baseline watches.
LYNIS_DIR = "/var/tmp/sovcloud-lynis"  # noqa: S108 - on the audited node, made afresh by root, 0700
_LYNIS_FILES = {"usr/sbin/lynis": "lynis", "usr/share/lynis/include": "include",
                "etc/lynis/plugins": "plugins", "usr/share/lynis/db": "db",
                "etc/lynis/default.prf": "default.prf"}


def lynis(ip: str) -> tuple[int, list[str]]:
    """Copy this machine's lynis (a shell program) to the node and run the quick audit there, as root, then
    remove it. Returns the hardening index and the suggestions (test IDs with their text)."""
    transform = [f"--transform=s|^{src}|{dst}|" for src, dst in _LYNIS_FILES.items()]
    tar = subprocess.run(["tar", "-C", "/", "-cf", "-", *transform, *_LYNIS_FILES], capture_output=True,
                         check=True).stdout
    subprocess.run([*ssh_args(ip), f"sudo rm -rf {LYNIS_DIR} && sudo mkdir -m 700 {LYNIS_DIR} && "
                    f"sudo tar -C {LYNIS_DIR} --no-same-owner -xf -"], input=tar, check=True, capture_output=True)
    r = subprocess.run([*ssh_args(ip), f"sudo sh -c 'cd {LYNIS_DIR} && sh ./lynis audit system --quick --no-colors "
                        f"--profile default.prf --logfile lynis.log --report-file report.dat && cat report.dat'; "
                        f"sudo rm -rf {LYNIS_DIR}"],
                       capture_output=True, text=True, timeout=900)
    m = re.search(r"Hardening index\s*:\s*(\d+)", r.stdout)
    if not m:
        raise RuntimeError(f"lynis on {ip} printed no hardening index (rc={r.returncode}): {r.stdout[-1500:]}")
    return int(m.group(1)), re.findall(r"^suggestion\[\]=(.*)$", r.stdout, re.M)


def round_for(n: int, repo: Path, work: Path, memory_mib: int, with_lynis: bool) -> dict:
    # hx-* like the lab test, so the lab waivers (container-only kernel controls) apply to the audit.
    names = [f"hx-b{n}-{i}" for i in range(n)]
    try:
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            ips = list(pool.map(lambda name: ls.start_node(name, memory_mib), names))
        nodes = {name: (ip, GROUPS[i % 3]) for i, (name, ip) in enumerate(zip(names, ips, strict=True))}
        out: dict = {"nodes": n, "start_s": round(time.monotonic() - t0, 1)}
        if with_lynis:
            out["lynis_before"], _ = lynis(ips[0])
        inv = ls.write_inventory(work / f"inv{n}.yml", nodes, repo)
        r, t_play, _ = ls.run_playbook(inv, forks=n)
        if r.returncode != 0:
            raise RuntimeError(f"playbook failed on {n} nodes:\n{r.stdout[-3000:]}")
        _, t_play2, recap2 = ls.run_playbook(inv, forks=n)
        rc, results, t_audit = ls.run_audit(inv, work / f"audit{n}", WAIVERS, extra=["--sudo"])
        out.update(playbook_s=round(t_play, 1), playbook_rerun_s=round(t_play2, 1),
                   rerun_changed=sum(v["changed"] for v in recap2.values()), audit_s=round(t_audit, 1),
                   audit_rc=rc, audit_fail=sorted({c for x in results if x["result"] == "fail"
                                                   for c in x["controls"]}))
        if with_lynis:
            out["lynis_after"], out["lynis_suggestions"] = lynis(ips[0])
        return out
    finally:
        for name in names:
            ls.remove_node(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="6,12", help="node counts, compared side by side (default 6,12)")
    ap.add_argument("--memory-mib", type=int, default=384, help="memory limit per node (default 384)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not all(1 <= s <= 12 for s in sizes) or len(sizes) != 2:
        ap.error("--sizes: two node counts of 1..12 (the lab shares a 2-core machine)")
    repo = ls.ensure_offline_repo()
    with tempfile.TemporaryDirectory(prefix="bench-hardening-") as tmp:
        small, big = (round_for(n, repo, Path(tmp), args.memory_mib, with_lynis=i == 0)
                      for i, n in enumerate(sizes))
    print(f"Lynis hardening index: before {small['lynis_before']}  after {small['lynis_after']}  (target >= 85)")
    for s in small["lynis_suggestions"]:
        print(f"  lynis suggestion: {s}")
    print(f"{'nodes':>5} {'playbook s':>10} {'s/node':>7} {'re-run s':>8} {'re-run changed':>14} "
          f"{'audit s':>7} {'s/node':>7}  audit fails")
    for r in (small, big):
        print(f"{r['nodes']:>5} {r['playbook_s']:>10} {r['playbook_s'] / r['nodes']:>7.1f} "
              f"{r['playbook_rerun_s']:>8} {r['rerun_changed']:>14} {r['audit_s']:>7} "
              f"{r['audit_s'] / r['nodes']:>7.1f}  {r['audit_fail'] or 'none'}")
    k = big["nodes"] / small["nodes"]
    print(f"{big['nodes']} vs {small['nodes']} nodes ({k:g}x): playbook wall time "
          f"{big['playbook_s'] / small['playbook_s']:.2f}x, audit {big['audit_s'] / small['audit_s']:.2f}x "
          f"(1.00x = perfect parallelism, {k:g}x = serial)")


if __name__ == "__main__":
    main()
