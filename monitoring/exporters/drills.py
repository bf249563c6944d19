"""Restore-drill exporter: the last drill result per site from drills/<site>/latest.json (SC-BCK-02).

Every store is read and the most recently finished drill wins, so a drill recorded at any site counts.
A site with no drill result anywhere shows timestamp 0 so RestoreDrillTooOld fires for it.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from dr import layout
from monitoring.exporters import s3 as s3util
from monitoring.exporters.config import DrillConfig, S3Store
from monitoring.exporters.core import Exporter, SnapshotCollector


class DrillExporter(Exporter):
    name = "drills"

    def __init__(self, cfg: DrillConfig, registry: CollectorRegistry | None = None) -> None:
        super().__init__(cfg.interval_seconds, cfg.timeout_seconds, registry)
        self.cfg = cfg
        self.snapshot = SnapshotCollector()
        self.registry.register(self.snapshot)

    def read_store(self, store: S3Store) -> dict[str, layout.DrillResult | str]:
        """{site: its drill result | error text}; sites without a result are left out."""
        bucket = s3util.bucket(store, self.cfg.timeout_seconds)
        out: dict[str, layout.DrillResult | str] = {}
        for site in self.cfg.sites:
            try:
                result = layout.read_drill(bucket, site)
            except layout.BadDocument as err:
                out[site] = str(err)
                continue
            if result is not None and result.finished is None:
                out[site] = f"{store.site}:{layout.drill_latest_key(site)}: has no `finished` time"
            elif result is not None:
                out[site] = result
        return out

    async def refresh(self) -> None:
        reads = await asyncio.gather(*(asyncio.wait_for(asyncio.to_thread(self.read_store, st),
                                                        self.cfg.timeout_seconds * 3)
                                       for st in self.cfg.stores), return_exceptions=True)
        up = GaugeMetricFamily("sovcloud_drill_store_up", "1 if the S3 store could be read",
                               labels=["store_site"])
        fam = {n: GaugeMetricFamily(f"sovcloud_restore_drill_{n}", h, labels=["site"]) for n, h in [
            ("success", "1 if the last restore drill passed"),
            ("last_timestamp_seconds", "When the last restore drill finished (0: never)"),
            ("rto_seconds", "Measured RTO of the last drill"),
            ("rpo_seconds", "Measured RPO of the last drill"),
            ("invalid", "1 if the newest drill result file is unreadable"),
            ("max_age_seconds", "How old the last drill may be"),
            ("rto_target_seconds", "RTO target"),
            ("rpo_target_seconds", "RPO target"),
        ]}
        best: dict[str, layout.DrillResult] = {}
        invalid: set[str] = set()
        for store, res in zip(self.cfg.stores, reads, strict=True):
            ok = isinstance(res, dict)
            up.add_metric([store.site], 1 if ok else 0)
            if not ok:
                continue
            assert isinstance(res, dict)
            for site, d in res.items():
                if isinstance(d, str):
                    invalid.add(site)
                elif site not in best or layout.epoch(d.finished) > layout.epoch(best[site].finished):
                    best[site] = d
        for site in self.cfg.sites:
            d = best.get(site)
            fam["last_timestamp_seconds"].add_metric([site], layout.epoch(d.finished) if d else 0)
            fam["invalid"].add_metric([site], 1 if site in invalid and d is None else 0)
            fam["max_age_seconds"].add_metric([site], self.cfg.max_age_seconds)
            fam["rto_target_seconds"].add_metric([site], self.cfg.rto_target_seconds)
            fam["rpo_target_seconds"].add_metric([site], self.cfg.rpo_target_seconds)
            if d is not None:
                fam["success"].add_metric([site], 1 if d.ok else 0)
                for n, value in (("rto", d.rto_seconds), ("rpo", d.rpo_seconds)):
                    if value is not None:
                        fam[f"{n}_seconds"].add_metric([site], value)
        self.snapshot.families = [up, *fam.values()]
        if not all(isinstance(r, dict) for r in reads):
            raise RuntimeError("an S3 store could not be read (see sovcloud_drill_store_up)")
