"""Backup/restore throughput: the DR pipeline (AES-256-GCM + resumable multipart + signed manifest +
verify) vs a plain boto3 upload_fileobj/download_fileobj of the same bytes to the same weed S3.

    .venv/bin/python -m bench.bench_dr [--mib 64]

Starts its own single-site SeaweedFS on loopback and removes it afterwards; bounded by --mib.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

from dr import backup, crypto, restore, s3io
from dr.config import load_config
from lab.loopback_s3 import ACCESS, SECRET, WeedSite


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64, choices=range(1, 257), metavar="1..256")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dr-") as d:
        d = Path(d)
        weed = os.environ.get("WEED", str(Path(__file__).resolve().parent.parent / ".venv/bin/weed"))
        site = WeedSite("dc-bench", d, weed)
        site.start()
        try:
            run(d, site, a.mib)
        finally:
            site.stop()


def run(d: Path, site: WeedSite, mib: int) -> None:
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
    cfg = load_config(d / "dr.yaml")
    data = os.urandom(mib << 20)
    s3 = s3io.client(cfg.sites[0])
    s3io.ensure_bucket(s3, cfg.sites[0], admin=s3)  # one Admin identity: it creates the locked bucket
    # Warm-up: weed grows its volumes on the first writes; keep that out of both measurements.
    s3.upload_fileobj(io.BytesIO(os.urandom(16 << 20)), cfg.sites[0].bucket, "bench/warmup")

    t = time.perf_counter()
    s3.upload_fileobj(io.BytesIO(data), cfg.sites[0].bucket, "bench/plain")
    plain_up = time.perf_counter() - t
    t = time.perf_counter()
    out = io.BytesIO()
    s3.download_fileobj(cfg.sites[0].bucket, "bench/plain", out)
    plain_down = time.perf_counter() - t
    assert out.getvalue() == data

    t = time.perf_counter()
    bdir = backup.stage(
        cfg, "dc-bench", "bench", {"type": "raw"}, [backup.Part("data", "tar", lambda dst: dst.write(data))], None
    )
    rep = backup.push(cfg, bdir)  # includes the full download-and-decrypt verification at the site
    dr_up = time.perf_counter() - t
    assert rep.good, rep.to_dict()
    t = time.perf_counter()
    f = restore.fetch(cfg, "dc-bench", "bench", None, d / "restore")
    dr_down = time.perf_counter() - t
    assert f.files["data"].read_bytes() == data

    def mibs(s: float) -> float:
        return mib / s

    print(f"payload {mib} MiB, one weed S3 on loopback, part size {cfg.part_size_mib} MiB")
    print(
        f"backup : plain boto3 {mibs(plain_up):7.1f} MiB/s | dr pipeline {mibs(dr_up):7.1f} MiB/s "
        f"| ratio dr/plain {plain_up / dr_up:.2f}"
    )
    print(
        f"restore: plain boto3 {mibs(plain_down):7.1f} MiB/s | dr pipeline {mibs(dr_down):7.1f} MiB/s "
        f"| ratio dr/plain {plain_down / dr_down:.2f}"
    )
    print(
        "(dr backup = encrypt + stage + multipart upload + manifest + remote verify; "
        "dr restore = download + checksum + decrypt + plaintext checksum)"
    )


if __name__ == "__main__":
    main()
