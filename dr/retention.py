"""GFS retention (grandfather-father-son): keep the newest backup of each of the last N days, ISO weeks
and months that have backups. A pure function over timestamps, plus pruning of an S3 site."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from dr import s3io
from dr.backup import TS_FORMAT
from dr.config import DrConfig, SiteS3


def _newest_per_period(stamps: list[datetime], period, n: int) -> set[datetime]:
    kept: set[datetime] = set()
    seen: set = set()
    for ts in stamps:  # newest first
        if len(seen) >= n:
            break
        p = period(ts)
        if p not in seen:
            seen.add(p)
            kept.add(ts)
    return kept


def gfs_keep(stamps: Iterable[datetime], daily: int, weekly: int, monthly: int) -> set[datetime]:
    """The timestamps to keep; everything else may be pruned."""
    ordered = sorted(set(stamps), reverse=True)
    return (
        _newest_per_period(ordered, lambda t: t.date(), daily)
        | _newest_per_period(ordered, lambda t: t.isocalendar()[:2], weekly)
        | _newest_per_period(ordered, lambda t: (t.year, t.month), monthly)
    )


def backups_at(s3, site: SiteS3, origin: str, dataset: str) -> dict[datetime, str]:
    pre = f"backups/{origin}/{dataset}/"
    out: dict[datetime, str] = {}
    for key in s3io.list_keys(s3, site.bucket, pre):
        stamp = key[len(pre) :].split("/")[0]
        try:
            out[datetime.strptime(stamp, TS_FORMAT)] = stamp
        except ValueError:
            continue  # not a backup prefix: leave it alone
    return out


def prune(cfg: DrConfig, site: SiteS3, origin: str, dataset: str, dry_run: bool = False) -> dict:
    """Delete the backups GFS does not keep. With versioning + object lock on, deletes only add delete
    markers and locked versions stay until their retention ends: that is the ransomware protection."""
    s3 = s3io.client(site)
    found = backups_at(s3, site, origin, dataset)
    r = cfg.retention
    keep = gfs_keep(found, r.daily, r.weekly, r.monthly)
    drop = sorted(found[t] for t in found if t not in keep)
    deleted = 0
    if not dry_run:
        for stamp in drop:
            pre = f"backups/{origin}/{dataset}/{stamp}/"
            keys = sorted(
                s3io.list_keys(s3, site.bucket, pre), key=lambda k: k.endswith("manifest.json"), reverse=True
            )  # manifest first: a half-pruned backup is never mistaken for one
            for k in keys:
                s3.delete_object(Bucket=site.bucket, Key=k)
                deleted += 1
    return {
        "site": site.name,
        "kept": sorted(found[t] for t in keep),
        "pruned": drop,
        "objects_deleted": deleted,
        "dry_run": dry_run,
    }
