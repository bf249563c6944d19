"""Restore drill: sentinel -> backup -> destroy -> restore -> verify, with measured RTO and RPO.

RPO is what a disaster right now would lose: disaster time minus the time the last backed-up data
point (the sentinel, written just before the snapshot) was written. RTO is disaster time to a
verified restore. The result (dr/layout.py DrillResult) goes to drills/<site>/latest.json at every reachable
site, where monitoring exports it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dr import jobs, layout, restore, s3io, sources
from dr.config import DrConfig
from dr.layout import DrillResult
from dr.store import S3Bucket

DRILL_CHECKS = {"restore-drill": ["SC-BCK-02"]}


def _run(
    cfg: DrConfig,
    site: str,
    dataset: str,
    prepare: Callable[[], None],
    do_backup: Callable[[], object],
    destroy: Callable[[], None],
    do_restore: Callable[[Path], str],
    details: dict | None = None,
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
    every_site = sorted(x.name for x in cfg.sites)
    checks = [
        {"name": "restore-drill", "ok": ok, "detail": err},
        # Verified at every site after the push (each copy's signature, checksums and decryption).
        {"name": "backup-replicated", "ok": sorted(replicated or []) == every_site,
         "detail": f"verified at {sorted(replicated or [])} of {every_site}"},
        # The restore decrypted and authenticated (AES-GCM) what was stored with the stack's KEK.
        {"name": "backup-encrypted", "ok": restored_from is not None,
         "detail": f"decrypted and authenticated from {restored_from}" if restored_from else err},
    ]
    return DrillResult(
        site=site,
        dataset=dataset,
        started=layout.rfc3339(t0),
        finished=layout.rfc3339(time.time()),
        ok=ok,
        rto_seconds=None if rto is None else round(rto, 3),
        rpo_seconds=None if rpo is None else round(rpo, 3),
        error=err,
        restored_from=restored_from,
        replicated_to=replicated,
        rto_target=cfg.rto_seconds,
        rpo_target=cfg.rpo_seconds,
        details=details,
        checks=checks,
    )


def _keys(etcd: sources.Etcd, prefix: str) -> list[str]:
    out = etcd.ctl("get", prefix, "--prefix", "--keys-only", what=f"list keys under {prefix}")
    return [ln for ln in out.splitlines() if ln.strip()]


def _restore_etcd(cfg: DrConfig, site: str, dataset: str, tmp: Path, data_dir: Path, check) -> str:
    """Fetch the newest verified copy, restore it into a fresh member at data_dir, run check on it."""
    f = restore.fetch(cfg, site, dataset, None, tmp)
    out = restore.restore_etcd(f, data_dir, keep_running=True)  # reads the sentinel back
    try:
        check(sources.Etcd(out["endpoint"]))
    finally:
        out["process"].stop()
    return f.site


def drill_etcd_live(
    cfg: DrConfig, etcd: sources.Etcd, site: str | None = None, dataset: str = "etcd", expect_keys: tuple = ()
) -> DrillResult:
    """Drill on a running cluster's etcd. A production member is never destroyed: the disaster is that
    the cluster's etcd is gone, and recovery is a fresh etcd (on loopback) restored from the newest
    verified copy, holding the sentinel written just before the snapshot and every key in expect_keys."""
    site = site or cfg.primary
    details: dict = {"source": etcd.endpoint}

    def check(restored: sources.Etcd) -> None:
        registry = _keys(restored, "/registry/")
        missing = [k for k in expect_keys if k not in registry]
        details["restored_registry_keys"] = len(registry)
        if missing:
            raise restore.RestoreError(f"restored etcd lacks {missing} ({len(registry)} keys under /registry/)")

    return _run(
        cfg,
        site,
        dataset,
        lambda: None,
        lambda: jobs.backup_etcd(cfg, etcd, dataset, site),
        lambda: None,
        lambda tmp: _restore_etcd(cfg, site, dataset, tmp, tmp / "fresh-etcd", check),
        details,
    )


def drill_namespace(
    cfg: DrConfig, api, namespace: str, site: str | None = None, target: str | None = None, on_object=None
) -> DrillResult:
    """Drill on a tenant namespace: sentinel -> backup -> restore into a fresh namespace of the same
    cluster -> verify every object and the sentinel. The tenant's namespace is left alone (the disaster
    is simulated by the fresh target); the drill namespace is deleted afterwards."""
    from dr import k8s

    site = site or cfg.primary
    target = target or f"{namespace}-drill-{os.urandom(3).hex()}"
    details: dict = {"target_namespace": target}

    def do_restore(tmp: Path) -> str:
        f = restore.fetch(cfg, site, f"k8s-{namespace}", None, tmp)
        details.update(restore.restore_k8s(f, api, target, on_object))
        return f.site

    try:
        return _run(
            cfg,
            site,
            f"k8s-{namespace}",
            lambda: None,
            lambda: jobs.backup_k8s(cfg, api, namespace, site),
            lambda: None,
            do_restore,
            details,
        )
    finally:
        k8s.delete_namespace(api, target)


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

    def check(etcd: sources.Etcd) -> None:
        count = len(_keys(etcd, "/drill/key/"))
        if count != seed_keys:
            raise restore.RestoreError(f"restored etcd has {count} drill keys, expected {seed_keys}")

    try:
        return _run(
            cfg,
            site,
            "drill-etcd",
            prepare,
            lambda: jobs.backup_etcd(cfg, state["etcd"], "drill-etcd", site),
            destroy,
            lambda tmp: _restore_etcd(cfg, site, "drill-etcd", tmp, work / "restored", check),
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


def latest_results(cfg: DrConfig, out_dir: Path) -> dict[str, str]:
    """Each site's newest published drill result (drills/<site>/latest.json, the newest across the stores) as
    out_dir/drill-<site>.json, what `python -m policies.evidence build --results` reads; site -> file or why
    there is none."""
    out_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, DrillResult] = {}
    errors: dict[str, str] = {}
    for store in cfg.sites:
        bucket = S3Bucket(store.name, s3io.client(store), store.bucket)
        for site in cfg.sites:
            try:
                result = layout.read_drill(bucket, site.name)
            except (*s3io.S3Error, layout.BadDocument) as err:
                errors.setdefault(site.name, f"{store.name}: {s3io.error_text(err)}")
                continue
            if result is None:
                errors.setdefault(site.name, f"{store.name}: no {layout.drill_latest_key(site.name)}")
            elif site.name not in found or (result.finished or "") > (found[site.name].finished or ""):
                found[site.name] = result
    written = {}
    for site in cfg.sites:
        if site.name in found:
            path = out_dir / f"drill-{site.name}.json"
            path.write_bytes(found[site.name].to_json())
            written[site.name] = str(path)
        else:
            written[site.name] = f"no drill result: {errors.get(site.name)}"
    return written


def publish(cfg: DrConfig, result: DrillResult) -> dict[str, str]:
    """Write drills/<site>/latest.json (and a dated copy) to every site; returns site -> ok|error."""
    body = result.to_json()
    stamp = layout.stamp(layout.parse_time(result.finished))
    out = {}
    for s in cfg.sites:
        try:
            c = s3io.client(s)
            s3io.ensure_bucket(c, s, admin=s3io.admin_client(s))
            s3io.put_small(c, s.bucket, layout.drill_history_key(result.site, stamp), body)
            s3io.put_small(c, s.bucket, layout.drill_latest_key(result.site), body)
            out[s.name] = "ok"
        except s3io.S3Error as err:
            out[s.name] = s3io.error_text(err)
    return out
