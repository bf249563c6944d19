"""Run benchmarks one after another, each with its defaults: `python -m bench [name ...]` (`make bench`).

Without names: every bench_*.py here except those that need lab nodes, which are run by name:
`python -m bench hardening` (up to 12 standalone nodes), `python -m bench lab` (two whole labs, one after
the other: hardened and not), `python -m bench control_plane` and `python -m bench site_loss` (faults on the
running default lab, `make lab`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
NEEDS_LAB = {"hardening", "lab", "control_plane", "site_loss"}


def main(names: list[str]) -> int:
    known = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    unknown = set(names) - set(known)
    if unknown:
        print(f"unknown benchmark(s) {sorted(unknown)}; known: {known}", file=sys.stderr)
        return 2
    failed = []
    for name in names or [k for k in known if k not in NEEDS_LAB]:
        print(f"== bench_{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.bench_{name}"], cwd=HERE.parent).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
