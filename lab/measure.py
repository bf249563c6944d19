"""Measure `lab up` cold/warm and the lab's memory: `python -m lab.measure [--scratch]`.

cold   = no containers of this lab instance; --rebuild-image also drops the node image (podman build),
         --scratch also the debootstrap rootfs. warm = `up` again on the running lab. Prints JSON.
Use --config with another instance name to measure without disturbing a lab others are using.
"""

from __future__ import annotations

import argparse
import json
import re
import time

from lab import api
from lab.config import load
from lab.image import IMAGE_REPO, ROOTFS_REPO, ensure_rootfs
from lab.podman import LABEL, podman

_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1e3}


def memory_mib(instance: str) -> dict[str, float]:
    ids = podman("ps", "-q", "--filter", f"label={LABEL}",
                 "--filter", f"label=sovcloud.lab.instance={instance}").split()
    out = podman("stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}", *ids)
    usage = {}
    for line in out.splitlines():
        name, mem = line.split("\t")
        m = re.match(r"([\d.]+)\s*([A-Za-z]+)", mem.split("/")[0].strip())
        if m:
            usage[name] = round(float(m.group(1)) * _UNITS[m.group(2)] / 1024**2, 1)
    return usage


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", help="topology YAML (default lab/lab.yaml)")
    p.add_argument("--rebuild-image", action="store_true", help="also rebuild the node image")
    p.add_argument("--scratch", action="store_true", help="also rebuild the debootstrap rootfs")
    a = p.parse_args()
    cfg = load(a.config)
    api.down(cfg)
    if a.rebuild_image or a.scratch:
        for ref in podman("images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO).split():
            podman("rmi", ref)  # fails if another lab still runs it: measure then, not now
    if a.scratch:
        podman("rmi", "--ignore", f"{ROOTFS_REPO}:{ensure_rootfs().stem.rsplit('-', 1)[1]}")
        ensure_rootfs().unlink()
    t = time.monotonic()
    cold = api.up(cfg)  # the hardware layer; control-plane bootstrap is measured by its owners
    cold_s = time.monotonic() - t
    t = time.monotonic()
    api.up(cfg)
    warm_s = time.monotonic() - t
    time.sleep(5)  # let boot-time spikes settle before sampling memory
    mem = memory_mib(cfg.name)
    print(json.dumps({
        "instance": cfg.name, "up_cold_s": round(cold_s, 1), "cold_timings": cold["timings"],
        "up_warm_s": round(warm_s, 1),
        "warm_over_cold": round(warm_s / cold_s, 3), "containers": len(mem),
        "memory_total_mib": round(sum(mem.values()), 1), "memory_limit_total_mib": cfg.total_memory_mib(),
        "memory_mib": mem,
    }, indent=2))


if __name__ == "__main__":
    main()
