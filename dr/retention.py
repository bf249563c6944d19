"""GFS retention (grandfather-father-son): keep the newest backup of each of the last N days, ISO weeks
and months that have backups. A pure function over timestamps, plus pruning of an S3 site."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from dr import layout, s3io
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
    """Every stamp with an object under the dataset's prefix (a backup, or what is left of one); keys that are not
    inside a backup are left alone."""
    out: dict[datetime, str] = {}
    for key in s3io.list_keys(s3, site.bucket, layout.dataset_prefix(origin, dataset)):
        if stamp := layout.stamp_of(key, origin, dataset):
            out[layout.parse_stamp(stamp).replace(tzinfo=None)] = stamp
    return out


def prune(
    cfg: DrConfig, site: SiteS3, origin: str, dataset: str, dry_run: bool = False, now: datetime | None = None
) -> dict:
    """Delete, with the site's admin keys, every version of each backup GFS does not keep, once its lock has
    ended. A backup with a version still under retention (or a legal hold) is left whole and reported in
    kept_by_lock with the date its last lock ends: the lock decides when a backup may go, not this function
    and not whoever holds the admin keys. A delete the server refuses anyway is reported in delete_refused.
    Backups hidden by a delete marker (no current manifest) are dropped too once unlocked."""
    s3 = s3io.admin_client(site)
    now = now or datetime.now(UTC)
    found = backups_at(s3, site, origin, dataset)
    r = cfg.retention
    keep = gfs_keep(found, r.daily, r.weekly, r.monthly)
    by_stamp: dict[str, list[dict]] = {}
    for v in s3io.list_versions(s3, site.bucket, layout.dataset_prefix(origin, dataset)):
        if stamp := layout.stamp_of(v["Key"], origin, dataset):
            by_stamp.setdefault(stamp, []).append(v)
    kept = {found[t] for t in keep}
    pruned: list[str] = []
    kept_by_lock: dict[str, str] = {}
    refused: dict[str, str] = {}
    deleted = 0
    for stamp in sorted(set(by_stamp) - kept):
        # Manifest first: a half-pruned backup is never mistaken for one.
        versions = sorted(by_stamp[stamp], key=lambda v: layout.is_manifest_key(v["Key"]), reverse=True)
        lock = _lock_end(s3, site, versions, now)
        if lock:
            kept_by_lock[stamp] = lock
            continue
        if not dry_run:
            try:
                for v in versions:
                    s3.delete_object(Bucket=site.bucket, Key=v["Key"], VersionId=v["VersionId"])
                    deleted += 1
            except s3io.S3Error as err:
                refused[stamp] = f"{v['Key']} (version {v['VersionId']}): {s3io.error_text(err)}"
                continue
        pruned.append(stamp)
    return {
        "site": site.name,
        "origin": origin,
        "dataset": dataset,
        "kept": sorted(kept),
        "pruned": pruned,
        "kept_by_lock": kept_by_lock,
        "delete_refused": refused,
        "objects_deleted": deleted,
        "dry_run": dry_run,
    }


def datasets_at(s3, site: SiteS3) -> list[tuple[str, str]]:
    """Every (origin, dataset) with a backup version at the site, hidden ones included."""
    found = set()
    for v in s3io.list_versions(s3, site.bucket, layout.BACKUPS):
        if pair := layout.origin_and_dataset(v["Key"]):
            found.add(pair)
    return sorted(found)


def prune_all(cfg: DrConfig, dry_run: bool = False, origin: str | None = None) -> list[dict]:
    """prune() of every dataset (of every origin, or of `origin`) at every site; a site that cannot be listed
    is reported, not raised."""
    out = []
    for site in cfg.sites:
        try:
            pairs = datasets_at(s3io.admin_client(site), site)
        except s3io.S3Error as err:
            out.append({"site": site.name, "error": f"S3 at {site.endpoint}: {s3io.error_text(err)}"})
            continue
        for o, dataset in pairs:
            if origin is not None and o != origin:
                continue
            try:
                out.append(prune(cfg, site, o, dataset, dry_run))
            except s3io.S3Error as err:
                out.append(
                    {
                        "site": site.name,
                        "origin": o,
                        "dataset": dataset,
                        "error": f"S3 at {site.endpoint}: {s3io.error_text(err)}",
                    }
                )
    return out


def _lock_end(s3, site: SiteS3, versions: list[dict], now: datetime) -> str | None:
    """When the last lock on these versions ends (ISO), 'legal hold' if one is held, None if none is left."""
    ends = []
    for v in versions:
        if v["DeleteMarker"]:
            continue  # a delete marker carries no lock
        mode, until, hold = s3io.version_lock(s3, site.bucket, v["Key"], v["VersionId"])
        if hold:
            return "legal hold"
        if mode and until and until > now:
            ends.append(until)
    return max(ends).isoformat() if ends else None
