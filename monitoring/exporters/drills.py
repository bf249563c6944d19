"""Restore-drill exporter: the last drill result per site from drills/<site>/latest.json (SC-BCK-02).

Every store is read and the most recently finished drill wins, so a drill recorded at any site counts.
A site with no drill result anywhere shows timestamp 0 so RestoreDrillTooOld fires for it.
"""

from __future__ import annotations

import asyncio
import json

from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from monitoring.exporters import s3 as s3util
from monitoring.exporters.backup import parse_time
from monitoring.exporters.config import DrillConfig, S3Store
from monitoring.exporters.core import Exporter, SnapshotCollector


class BadDrill(Exception):
    pass


def parse_drill(raw: bytes, site: str, where: str) -> dict:
    try:
        d = json.loads(raw)
        out = {"ok": bool(d["ok"]) if isinstance(d["ok"], bool) else None,
               "finished": parse_time(d["finished"]), "started": parse_time(d["started"]),
               "rto": float(d["rto_seconds"]) if d.get("rto_seconds") is not None else None,
               "rpo": float(d["rpo_seconds"]) if d.get("rpo_seconds") is not None else None}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise BadDrill(f"{where}: drill result unreadable ({err!r})") from None
    if out["ok"] is None:
        raise BadDrill(f"{where}: `ok` must be true or false")
    if d.get("site") != site:
        raise BadDrill(f"{where}: names site {d.get('site')!r}, not {site!r}")
    return out


class DrillExporter(Exporter):
    name = "drills"

    def __init__(self, cfg: DrillConfig, registry: CollectorRegistry | None = None) -> None:
        super().__init__(cfg.interval_seconds, cfg.timeout_seconds, registry)
        self.cfg = cfg
        self.snapshot = SnapshotCollector()
        self.registry.register(self.snapshot)

    def read_store(self, store: S3Store) -> dict[str, dict | str]:
        """{site: parsed drill | error text}; sites without a file are left out."""
        s3 = s3util.client(store, self.cfg.timeout_seconds)
        out: dict[str, dict | str] = {}
        for site in self.cfg.sites:
            key = f"drills/{site}/latest.json"
            try:
                raw = s3.get_object(Bucket=store.bucket, Key=key)["Body"].read()
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
                    continue
                raise
            try:
                out[site] = parse_drill(raw, site, f"{store.site}:{key}")
            except BadDrill as err:
                out[site] = str(err)
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
        best: dict[str, dict] = {}
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
                elif site not in best or d["finished"] > best[site]["finished"]:
                    best[site] = d
        for site in self.cfg.sites:
            d = best.get(site)
            fam["last_timestamp_seconds"].add_metric([site], d["finished"] if d else 0)
            fam["invalid"].add_metric([site], 1 if site in invalid and d is None else 0)
            fam["max_age_seconds"].add_metric([site], self.cfg.max_age_seconds)
            fam["rto_target_seconds"].add_metric([site], self.cfg.rto_target_seconds)
            fam["rpo_target_seconds"].add_metric([site], self.cfg.rpo_target_seconds)
            if d is not None:
                fam["success"].add_metric([site], 1 if d["ok"] else 0)
                for n in ("rto", "rpo"):
                    if d[n] is not None:
                        fam[f"{n}_seconds"].add_metric([site], d[n])
        self.snapshot.families = [up, *fam.values()]
        if not all(isinstance(r, dict) for r in reads):
            raise RuntimeError("an S3 store could not be read (see sovcloud_drill_store_up)")
