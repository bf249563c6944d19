"""Backup/restore throughput: the DR pipeline (AES-256-GCM + signed manifest + parallel resumable multipart +
lock check + read-back verify) vs a plain boto3 upload_fileobj/download_fileobj (boto3's default transfer
settings) of the same bytes to the same weed S3, side by side in one run.

    .venv/bin/python -m bench.bench_dr [--mib 64] [--runs 1]
    .venv/bin/python -m bench.bench_dr --mib 1024      # the 1 GiB case: the DR pipeline's time and peak memory

Starts its own single-site SeaweedFS on loopback and removes it afterwards; bounded by --mib x --runs. The
dataset is a file; each transfer runs in a process of its own, which reports its time (without interpreter
start-up) and its peak RSS, so the DR pipeline's memory is measured apart from the dataset and the bench.
Each run: the plain upload and download, then the DR backup and restore; with --runs N the runs repeat and the
ratios are given as min / median. Each step also reports the CPU seconds of the client and of the S3 server and
how many cores they kept busy together: where that is all of the machine's cores the transfer is CPU-bound, and
its ratio is the ratio of CPU seconds, which names where a gap comes from.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
import yaml

from bench import cpu_seconds
from dr import backup, crypto, restore, s3io
from dr.config import load_config
from lab.loopback_s3 import ACCESS, SECRET, WeedSite

ROOT = Path(__file__).resolve().parent.parent
DATASET = "bench"
# The reference object goes to a bucket without object lock, so that it can be deleted before the DR backup
# writes as much into the small loopback weed (lab/loopback_s3.py).
PLAIN_BUCKET, PLAIN_KEY = "bench-plain", "plain"
MAX_SIDE_BY_SIDE_MIB = 512


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64, choices=range(1, 1025), metavar="1..1024")
    ap.add_argument("--runs", type=int, default=1, choices=range(1, 6), metavar="1..5")
    ap.add_argument("--child", nargs=2, metavar=("STEP", "DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mib * a.runs > 1536:
        ap.error("--mib x --runs must be 1536 or less: every run's backup stays locked in the loopback S3 (2 GiB)")
    if a.child:
        print(json.dumps(child(a.child[0], Path(a.child[1]))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-dr-") as d:
        d = Path(d)
        weed = os.environ.get("WEED", str(ROOT / ".venv/bin/weed"))
        site = WeedSite("dc-bench", d, weed)
        site.start()
        try:
            run(d, site, a.mib, a.runs)
        finally:
            site.stop()


def _config(d: Path):
    return load_config(d / "dr.yaml")


def child(step: str, d: Path) -> dict:
    """One transfer, timed inside this process; returns its seconds and this process's peak RSS."""
    cfg = _config(d)
    site = cfg.sites[0]
    data = d / "data.bin"
    phases: dict[str, float] = {}
    # A first client loads boto3's service models (~0.5 s); every step has one made before its clock starts,
    # and its CPU is counted from there too (the same span as its seconds).
    s3 = s3io.client(site)
    cpu0 = _cpu()
    if step in ("plain-up", "plain-down"):
        t = time.perf_counter()
        if step == "plain-up":
            with open(data, "rb") as f:
                s3.upload_fileobj(f, PLAIN_BUCKET, PLAIN_KEY)
        else:
            with open(d / "plain.out", "wb") as f:
                s3.download_fileobj(PLAIN_BUCKET, PLAIN_KEY, f)
        seconds = time.perf_counter() - t
    elif step == "dr-backup":
        timed = backup.verify_remote

        def verify(*args, **kw):
            t0 = time.perf_counter()
            try:
                return timed(*args, **kw)
            finally:
                phases["read-back verify"] = phases.get("read-back verify", 0) + time.perf_counter() - t0

        backup.verify_remote = verify
        t = time.perf_counter()

        def write(dst) -> None:
            with open(data, "rb") as src:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)

        bdir = backup.stage(cfg, site.name, DATASET, {"type": "raw"}, [backup.Part("data", "tar", write)], None)
        phases["encrypt+sign (stage)"] = time.perf_counter() - t
        rep = backup.push(cfg, bdir)
        seconds = time.perf_counter() - t
        assert rep.good, rep.to_dict()
    elif step == "dr-restore":
        t = time.perf_counter()
        f = restore.fetch(cfg, site.name, DATASET, None, d / "restore")
        seconds = time.perf_counter() - t
        os.replace(f.files["data"], d / "dr.out")
    else:
        raise SystemExit(f"unknown step {step}")
    return {"seconds": seconds, "phases": phases, "cpu_seconds": _cpu() - cpu0,
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _busy(step: dict) -> float:
    return (step["cpu_seconds"] + step["server_cpu_seconds"]) / step["seconds"]


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _step(step: str, d: Path, site: WeedSite) -> dict:
    server0 = cpu_seconds(site.proc.pid)
    out = subprocess.run([sys.executable, "-m", "bench.bench_dr", "--child", step, str(d)], cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench step {step} failed:\n{out.stderr[-3000:]}")
    # The server's CPU over the whole child process (its start-up included, which makes no requests).
    return json.loads(out.stdout.splitlines()[-1]) | {"server_cpu_seconds": cpu_seconds(site.proc.pid) - server0}


def _vacuum(site: WeedSite) -> None:
    # weed's master API: compact volumes now rather than on its schedule.
    url = f"http://127.0.0.1:{site.ports['master']}/vol/vacuum?garbageThreshold=0.0001"
    urllib.request.urlopen(url, timeout=600).read()  # noqa: S310 - loopback


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def run(d: Path, site: WeedSite, mib: int, runs: int) -> None:
    (d / "creds.json").write_text(json.dumps({"access_key": ACCESS, "secret_key": SECRET}))
    crypto.keygen(d / "kek", d / "sk.pem", d / "vk.pem")
    (d / "dr.yaml").write_text(
        yaml.safe_dump(
            {
                "sites": [{"name": "dc-bench", "endpoint": site.endpoint, "credentials_file": "creds.json"}],
                "primary": "dc-bench",
                "kek_file": "kek",
                "signing_key_file": "sk.pem",
                "verify_key_file": "vk.pem",
                "staging_dir": "staging",
                "part_size_mib": 8,
            }
        )
    )
    cfg = _config(d)
    with open(d / "data.bin", "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    want = _sha(d / "data.bin")
    s3 = s3io.client(cfg.sites[0])
    s3io.ensure_bucket(s3, cfg.sites[0], admin=s3)  # one Admin identity: it creates the locked bucket
    # The loopback weed has 16 volumes of 128 MiB, shared by its buckets, which grow them 7 at a time: a
    # reference bucket beside the backups' leaves room for up to 512 MiB. Above that only the DR pipeline
    # runs (its time and peak memory); the ratios come from a smaller --mib.
    plain = mib <= MAX_SIDE_BY_SIDE_MIB
    buckets = (PLAIN_BUCKET, cfg.sites[0].bucket) if plain else (cfg.sites[0].bucket,)
    if plain:
        s3.create_bucket(Bucket=PLAIN_BUCKET)
    # Warm-up: weed grows a bucket's volumes on its first writes; keep that out of both measurements.
    for bucket in buckets:
        s3.upload_fileobj(io.BytesIO(os.urandom(16 << 20)), bucket, "bench/warmup")

    rows = []
    for _ in range(runs):
        r = {}
        if plain:
            r = {step: _step(step, d, site) for step in ("plain-up", "plain-down")}
            s3.delete_object(Bucket=PLAIN_BUCKET, Key=PLAIN_KEY)
            _vacuum(site)  # give the reference's space back before the DR backup writes as much
            assert _sha(d / "plain.out") == want, "the plain download differs from the data"
        r |= {step: _step(step, d, site) for step in ("dr-backup", "dr-restore")}
        assert _sha(d / "dr.out") == want, "the DR restore differs from the data"
        rows.append(r)
    if not plain:
        b, rs = rows[0]["dr-backup"], rows[0]["dr-restore"]
        print(f"payload {mib} MiB (a file), one weed S3 on loopback, DR pipeline only (a plain reference does "
              f"not fit beside it above {MAX_SIDE_BY_SIDE_MIB} MiB)")
        print(f"  dr backup {mib / b['seconds']:.1f} MiB/s (" + ", ".join(f"{k} {v:.2f} s" for k, v in
              b["phases"].items()) + f"), dr restore {mib / rs['seconds']:.1f} MiB/s")
        print(f"  peak RSS MiB: dr backup {b['maxrss_mib']:.0f}, dr restore {rs['maxrss_mib']:.0f}; client CPU s: "
              f"dr backup {b['cpu_seconds']:.2f}, dr restore {rs['cpu_seconds']:.2f}; S3 server CPU s: dr backup "
              f"{b['server_cpu_seconds']:.2f}, dr restore {rs['server_cpu_seconds']:.2f}; cores busy: dr backup "
              f"{_busy(b):.2f}, dr restore {_busy(rs):.2f} (of {os.cpu_count()})")
        return

    def mibs(s: float) -> str:
        return f"{mib / s:7.1f} MiB/s"

    print(f"payload {mib} MiB (a file), one weed S3 on loopback, dr part size {cfg.part_size_mib} MiB, "
          f"{s3io.CONCURRENCY} parts in flight; reference: boto3 {boto3.__version__} "
          "upload_fileobj/download_fileobj, default TransferConfig")
    for i, r in enumerate(rows, 1):
        b, pu, rs, pd = r["dr-backup"], r["plain-up"], r["dr-restore"], r["plain-down"]
        verify = b["phases"].get("read-back verify", 0.0)
        print(f"run {i}:")
        print(f"  backup : plain boto3 {mibs(pu['seconds'])} | dr {mibs(b['seconds'])} "
              f"| ratio dr/plain {pu['seconds'] / b['seconds']:.2f} "
              f"(without the read-back verify {pu['seconds'] / (b['seconds'] - verify):.2f})")
        print("           dr phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in b["phases"].items())
              + f", total {b['seconds']:.2f} s")
        print(f"  restore: plain boto3 {mibs(pd['seconds'])} | dr {mibs(rs['seconds'])} "
              f"| ratio dr/plain {pd['seconds'] / rs['seconds']:.2f}")
        print(f"  client CPU s (user+sys): dr backup {b['cpu_seconds']:.2f}, plain up {pu['cpu_seconds']:.2f}, "
              f"dr restore {rs['cpu_seconds']:.2f}, plain down {pd['cpu_seconds']:.2f}")
        print(f"  S3 server CPU s: dr backup {b['server_cpu_seconds']:.2f}, plain up {pu['server_cpu_seconds']:.2f}, "
              f"dr restore {rs['server_cpu_seconds']:.2f}, plain down {pd['server_cpu_seconds']:.2f}")
        print(f"  cores busy (client + server CPU / wall): dr backup {_busy(b):.2f}, plain up {_busy(pu):.2f}, "
              f"dr restore {_busy(rs):.2f}, plain down {_busy(pd):.2f} (of {os.cpu_count()})")
        print(f"  peak RSS MiB: dr backup {b['maxrss_mib']:.0f}, dr restore {rs['maxrss_mib']:.0f}, "
              f"plain up {pu['maxrss_mib']:.0f}, plain down {pd['maxrss_mib']:.0f}")
    if runs > 1:
        def summary(name: str, num: str, den: str) -> str:
            xs = [r[num]["seconds"] / r[den]["seconds"] for r in rows]
            return f"{name} ratio min {min(xs):.2f} / median {statistics.median(xs):.2f}"

        print(f"over {runs} runs: {summary('backup', 'plain-up', 'dr-backup')}; "
              f"{summary('restore', 'plain-down', 'dr-restore')}")
    print("(dr backup = encrypt + sign + stage + parallel multipart upload + lock check + read-back verify "
          "(download, checksum, decrypt); dr restore = parallel ranged download + checksum + decrypt + plaintext "
          "checksum)")


if __name__ == "__main__":
    main()
