"""One backup of each kind, end to end: sentinel -> stage -> push to every site."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from dr import backup, hooks, k8s, sources
from dr.config import DrConfig


def _sentinel(key: str) -> dict:
    return {"key": key, "value": sources.new_sentinel(), "written": datetime.now(UTC).isoformat()}


def backup_etcd(
    cfg: DrConfig,
    etcd: sources.Etcd,
    dataset: str = "etcd",
    site: str | None = None,
    write_sentinel: bool = True,
    on_part=None,
) -> backup.Report:
    sentinel = None
    if write_sentinel:
        sentinel = _sentinel(sources.SENTINEL_KEY)
        etcd.put(sentinel["key"], sentinel["value"])

    def snap(dst) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "snap.db"
            sources.etcd_snapshot(etcd, p)
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    dst.write(chunk)

    bdir = backup.stage(
        cfg,
        site or cfg.primary,
        dataset,
        {"type": "etcd", "endpoint": etcd.endpoint},
        [backup.Part("etcd-snapshot", "etcd-snapshot", snap)],
        sentinel,
    )
    return backup.push(cfg, bdir, on_part=on_part)


def backup_dir(
    cfg: DrConfig, src: Path, dataset: str, site: str | None = None, write_sentinel: bool = True, on_part=None
) -> backup.Report:
    if not src.is_dir():
        raise sources.SourceError(f"--source {src}: not a directory")
    sentinel = None
    if write_sentinel:
        sentinel = _sentinel(sources.SENTINEL_FILE)
        sources.write_dir_sentinel(src, sentinel["value"])
    bdir = backup.stage(
        cfg,
        site or cfg.primary,
        dataset,
        {"type": "dir", "path": str(src)},
        [backup.Part("data", "tar", lambda dst: sources.dir_to_tar(src, dst))],
        sentinel,
    )
    return backup.push(cfg, bdir, on_part=on_part)


def backup_k8s(
    cfg: DrConfig, api, namespace: str, site: str | None = None, write_sentinel: bool = True
) -> backup.Report:
    """The namespace's objects and, for each pod that declares one (dr/hooks.py), its application's dump."""
    sentinel = None
    if write_sentinel:
        sentinel = _sentinel(f"configmaps/{k8s.SENTINEL_CONFIGMAP}")
        k8s.write_sentinel(api, namespace, sentinel["value"])
    declared, unhooked = hooks.scan(api, namespace)
    objects = k8s.export_namespace(api, namespace)
    parts = [backup.Part("data", "tar", lambda dst: k8s.objects_to_tar(objects, dst))]
    parts += [backup.Part(h.part, "dump", lambda dst, h=h: hooks.dump(api, namespace, h, dst)) for h in declared]
    bdir = backup.stage(
        cfg,
        site or cfg.primary,
        f"k8s-{namespace}",
        {"type": "k8s", "namespace": namespace, "objects": len(objects),
         "dumps": [{"part": h.part, "pod": h.pod, "container": h.container, "labels": h.labels} for h in declared],
         "not_backed_up": unhooked},
        parts,
        sentinel,
    )
    return backup.push(cfg, bdir)
