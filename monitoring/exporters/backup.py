"""Backup freshness (RPO) exporter: the age of the last GOOD backup per site and dataset, per S3 store.

The store's layout is dr/layout.py's. A backup counts only if its manifest parses, names the same
site/dataset as its path, carries a signature (verified when verify_key_file is set) and every object it
lists exists with the listed size; a prefix without a manifest is an interrupted upload.
The `offsite` label says whether the copy lives on another site's store (SC-BCK-01: replicated).
"""

from __future__ import annotations

import asyncio
import time

from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from dr import layout
from dr.store import Store
from monitoring.exporters import s3 as s3util
from monitoring.exporters.config import BackupConfig, S3Store
from monitoring.exporters.core import Exporter, SnapshotCollector


class BadBackup(Exception):
    pass


def check_manifest(store: Store, site: str, dataset: str, ts: str, verify_key) -> float:
    """Epoch seconds the backup was created, or BadBackup naming what is wrong with it."""
    key = layout.manifest_key(site, dataset, ts)
    raw = store.get(key)
    if raw is None:
        raise BadBackup(f"{key}: no manifest")
    try:
        m = layout.Manifest.parse(raw, key)
    except layout.BadDocument as err:
        raise BadBackup(str(err)) from None
    if (m.site, m.dataset) != (site, dataset):
        raise BadBackup(f"{key}: manifest names {m.site}/{m.dataset}, not its path")
    if not m.signature:
        raise BadBackup(f"{key}: manifest is unsigned")
    if verify_key is not None:
        from dr import crypto  # the signature format is dr's; verify it with dr's own code

        try:
            crypto.verify_manifest(m.model_dump(exclude_unset=True), verify_key, key)
        except crypto.CryptoError as err:
            raise BadBackup(str(err)) from None
    for obj in m.objects:
        size = store.size(obj.key)
        if size is None:
            raise BadBackup(f"{key}: object {obj.key} missing")
        if size != obj.size:
            raise BadBackup(f"{key}: object {obj.key} is {size} bytes, manifest says {obj.size}")
    return m.created_epoch


def scan(store: Store, max_candidates: int, verify_key) -> tuple[dict[tuple[str, str], tuple[float, int]], bool]:
    """{(site, dataset): (last good created, newer bad manifests)} of one store, and whether it answered."""
    found: dict[tuple[str, str], tuple[float, int]] = {}
    try:
        for site in store.children(layout.BACKUPS):
            for dataset in store.children(f"{layout.BACKUPS}{site}/"):
                # The path's stamp orders candidates; the manifest's `created` is what is reported.
                stamps = sorted((ts for ts in store.children(layout.dataset_prefix(site, dataset))
                                 if layout.parse_stamp(ts)), reverse=True)
                last, bad = 0.0, 0
                for ts in stamps[:max_candidates]:
                    try:
                        last = check_manifest(store, site, dataset, ts, verify_key)
                        break
                    except BadBackup:
                        bad += 1
                found[(site, dataset)] = (last, bad)
    except (BotoCoreError, ClientError):
        return found, False
    return found, True


class BackupExporter(Exporter):
    name = "backup"

    def __init__(self, cfg: BackupConfig, registry: CollectorRegistry | None = None) -> None:
        super().__init__(cfg.interval_seconds, cfg.timeout_seconds, registry)
        self.cfg = cfg
        self.snapshot = SnapshotCollector()
        self.registry.register(self.snapshot)
        self.verify_key = None
        if cfg.verify_key_file is not None:
            from dr import crypto

            self.verify_key = crypto.load_verify_key(cfg.verify_key_file)

    def scan_store(self, s3store: S3Store) -> tuple[dict[tuple[str, str], tuple[float, int]], bool]:
        """{(site, dataset): (last good created, newer bad manifests)}, and whether the store answered."""
        return scan(s3util.bucket(s3store, self.cfg.timeout_seconds), self.cfg.max_candidates, self.verify_key)

    async def refresh(self) -> None:
        scans = await asyncio.gather(*(asyncio.wait_for(asyncio.to_thread(self.scan_store, st),
                                                        self.cfg.timeout_seconds * 3)
                                       for st in self.cfg.stores), return_exceptions=True)
        now = time.time()
        rpo = {(e.site, e.dataset): e.rpo_seconds for e in self.cfg.expected}
        up = GaugeMetricFamily("sovcloud_backup_store_up", "1 if the S3 store could be listed",
                               labels=["store_site"])
        last = GaugeMetricFamily("sovcloud_backup_last_success_timestamp_seconds",
                                 "Creation time of the newest good backup (0: none)",
                                 labels=["site", "dataset", "store_site", "offsite"])
        age = GaugeMetricFamily("sovcloud_backup_age_seconds", "Age of the newest good backup",
                                labels=["site", "dataset", "store_site", "offsite"])
        bad = GaugeMetricFamily("sovcloud_backup_bad_manifests", "Backups newer than the last good one that "
                                "failed validation", labels=["site", "dataset", "store_site", "offsite"])
        target = GaugeMetricFamily("sovcloud_backup_rpo_seconds", "RPO target", labels=["site", "dataset"])
        datasets: set[tuple[str, str]] = set(rpo)
        for store, scan in zip(self.cfg.stores, scans, strict=True):
            found, ok = scan if isinstance(scan, tuple) else ({}, False)
            up.add_metric([store.site], 1 if ok else 0)
            datasets |= set(found)
            for site, dataset in sorted(set(found) | set(rpo)):
                if not ok:
                    continue  # an unreachable store reports nothing rather than a false age
                ts, nbad = found.get((site, dataset), (0.0, 0))
                labels = [site, dataset, store.site, "true" if store.site != site else "false"]
                last.add_metric(labels, ts)
                age.add_metric(labels, now - ts)
                bad.add_metric(labels, nbad)
        for site, dataset in sorted(datasets):
            target.add_metric([site, dataset], rpo.get((site, dataset), self.cfg.default_rpo_seconds))
        self.snapshot.families = [up, last, age, bad, target]
        if not all(isinstance(s, tuple) and s[1] for s in scans):
            raise RuntimeError("an S3 store could not be read (see sovcloud_backup_store_up)")

