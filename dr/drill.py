"""Restore drill: sentinel -> backup -> destroy -> restore -> verify, with measured RTO and RPO.

RPO is what a disaster right now would lose: disaster time minus the time the last backed-up data
point (the sentinel, written just before the snapshot) was written. RTO is disaster time to a
verified restore. The result goes to drills/<site>/latest.json at every reachable site, where
monitoring exports it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from dr import jobs, restore, s3io, sources
from dr.config import DrConfig

DRILL_CHECKS = {"restore-drill": ["SC-BCK-02"]}


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class DrillResult:
    site: str
    dataset: str
    started: str
    finished: str
    ok: bool
    rto_seconds: float | None
    rpo_seconds: float | None
    error: str | None
    restored_from: str | None = None
    replicated_to: list[str] | None = None
    rto_target: int | None = None
    rpo_target: int | None = None


def _run(
    cfg: DrConfig,
    site: str,
    dataset: str,
    prepare: Callable[[], None],
    do_backup: Callable[[], object],
    destroy: Callable[[], None],
    do_restore: Callable[[Path], str],
) -> DrillResult:
    t0 = time.time()
    rto = rpo = None
    err = restored_from = None
    replicated: list[str] = []
    try:
        prepare()
        t_data = time.time()  # the sentinel is written at the start of the backup
        rep = do_backup()
        if not rep.good:
            raise restore.RestoreError(f"backup landed verified at no site: {rep.to_dict()['sites']}")
        replicated = rep.verified_sites
        t_disaster = time.time()
        rpo = t_disaster - t_data
        destroy()
        with tempfile.TemporaryDirectory(prefix="dr-drill-") as work:
            restored_from = do_restore(Path(work))
        rto = time.time() - t_disaster
    except Exception as e:  # noqa: BLE001 - a drill reports every failure as its result
        err = f"{type(e).__name__}: {e}"
    ok = err is None and rto is not None and rto <= cfg.rto_seconds and rpo is not None and rpo <= cfg.rpo_seconds
    if err is None and not ok:
        err = f"targets missed: rto {rto:.1f}s (target {cfg.rto_seconds}s), rpo {rpo:.1f}s (target {cfg.rpo_seconds}s)"
    return DrillResult(
        site,
        dataset,
        rfc3339(t0),
        rfc3339(time.time()),
        ok,
        None if rto is None else round(rto, 3),
        None if rpo is None else round(rpo, 3),
        err,
        restored_from,
        replicated,
        cfg.rto_seconds,
        cfg.rpo_seconds,
    )


def drill_etcd(cfg: DrConfig, site: str | None = None, seed_keys: int = 200) -> DrillResult:
    """Drill on a scratch single-member etcd: seed, back up, destroy its data dir, restore, verify."""
    site = site or cfg.primary
    work = Path(tempfile.mkdtemp(prefix="dr-drill-etcd-"))
    state: dict = {}

    def prepare() -> None:
        proc = sources.EtcdProcess(work / "member", restore.free_port(), restore.free_port(), name="drill")
        state["proc"], state["etcd"] = proc, proc.start()
        for i in range(seed_keys):
            state["etcd"].put(f"/drill/key/{i:05d}", f"value-{i}")

    def destroy() -> None:
        state["proc"].stop()
        shutil.rmtree(work / "member")

    def do_restore(tmp: Path) -> str:
        f = restore.fetch(cfg, site, "drill-etcd", None, tmp)
        out = restore.restore_etcd(f, work / "restored", keep_running=True)
        try:
            etcd = sources.Etcd(out["endpoint"])
            keys = etcd.ctl("get", "/drill/key/", "--prefix", "--keys-only", what="list restored keys")
            count = sum(1 for ln in keys.splitlines() if ln.strip())
            if count != seed_keys:
                raise restore.RestoreError(f"restored etcd has {count} drill keys, expected {seed_keys}")
        finally:
            out["process"].stop()
        return f.site

    try:
        return _run(
            cfg,
            site,
            "drill-etcd",
            prepare,
            lambda: jobs.backup_etcd(cfg, state["etcd"], "drill-etcd", site),
            destroy,
            do_restore,
        )
    finally:
        if "proc" in state:
            state["proc"].stop()
        shutil.rmtree(work, ignore_errors=True)


def drill_dir(cfg: DrConfig, src: Path, dataset: str, site: str | None = None) -> DrillResult:
    """Drill on a directory the caller designates as a drill target: it is really deleted and restored."""
    site = site or cfg.primary

    def do_restore(tmp: Path) -> str:
        f = restore.fetch(cfg, site, dataset, None, tmp)
        restore.restore_tar(f, src)
        return f.site

    return _run(
        cfg,
        site,
        dataset,
        lambda: None,
        lambda: jobs.backup_dir(cfg, src, dataset, site),
        lambda: shutil.rmtree(src),
        do_restore,
    )


def publish(cfg: DrConfig, result: DrillResult) -> dict[str, str]:
    """Write drills/<site>/latest.json (and a dated copy) to every site; returns site -> ok|error."""
    body = json.dumps(asdict(result), indent=1).encode()
    stamp = result.finished[:19].replace("-", "").replace(":", "") + "Z"
    out = {}
    for s in cfg.sites:
        try:
            c = s3io.client(s)
            s3io.ensure_bucket(c, s)
            s3io.put_small(c, s.bucket, f"drills/{result.site}/history/{stamp}.json", body)
            s3io.put_small(c, s.bucket, f"drills/{result.site}/latest.json", body)
            out[s.name] = "ok"
        except s3io.S3Error as err:
            out[s.name] = s3io.error_text(err)
    return out
