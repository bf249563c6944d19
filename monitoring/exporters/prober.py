"""Cross-site availability prober: this site GETs the other sites' API, gateway and S3 endpoints.

Counters of probes and failures (not just an up/down gauge) are what the SLO burn-rate rules divide,
so the error budget of the 99.982% Tier-III target is measured over real probe outcomes (SC-AVL-01).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitoring.exporters.config import ProberConfig, ProbeTarget
from monitoring.exporters.core import Exporter

try:
    import sniffio  # noqa: F401
except ImportError:
    # Without sniffio, httpcore retries `import sniffio` on every request: a full sys.path scan each time,
    # measured at a third of a probe round's CPU. A None entry makes that import fail at once (-> asyncio).
    sys.modules["sniffio"] = None  # type: ignore[assignment]

LABELS = ["source_site", "target_site", "service"]
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class RoundResult:
    ok: int
    failed: int
    seconds: float


class Prober(Exporter):
    name = "prober"

    def __init__(self, cfg: ProberConfig, registry: CollectorRegistry | None = None) -> None:
        super().__init__(cfg.interval_seconds, cfg.timeout_seconds, registry)
        self.cfg = cfg
        r = self.registry
        self.total = Counter("sovcloud_probe_total", "Probes sent", LABELS, registry=r)
        self.failures = Counter("sovcloud_probe_failures_total", "Probes that failed", LABELS, registry=r)
        self.up = Gauge("sovcloud_probe_up", "1 if the last probe succeeded", LABELS, registry=r)
        self.duration = Histogram("sovcloud_probe_duration_seconds", "Probe latency", LABELS,
                                  buckets=BUCKETS, registry=r)
        self.status = Gauge("sovcloud_probe_http_status_code", "HTTP status of the last probe (0: none)",
                            LABELS, registry=r)
        self.targets = [(t, [cfg.source_site, t.site, t.service]) for t in cfg.targets]
        for _, labels in self.targets:
            # Zero-initialised series: rate() over a counter that appears at its first failure misses it.
            self.total.labels(*labels)
            self.failures.labels(*labels)
        self._clients: dict[tuple, httpx.AsyncClient] = {}
        self.local = (ProbeTarget(site=cfg.source_site, service="gateway", url=cfg.local_check_url)
                      if cfg.local_check_url else None)
        self.local_up = Gauge("sovcloud_prober_local_up", "1 if the last check of local_check_url succeeded",
                              ["source_site"], registry=r).labels(cfg.source_site)
        self.skipped = Counter("sovcloud_probe_rounds_skipped_total", "Rounds not counted: the own site's "
                               "local_check_url failed", ["source_site"], registry=r).labels(cfg.source_site)

    def _tls(self, target: ProbeTarget) -> tuple[Path | None, Path | None, Path | None]:
        return (target.ca_file or self.cfg.ca_file, target.client_cert_file, target.client_key_file)

    def _verify(self, ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext | bool:
        if not self.cfg.verify_tls:
            return False
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # SC-CRY-01: a TLS 1.0/1.1 endpoint counts as down
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    def client(self, target: ProbeTarget) -> httpx.AsyncClient:
        """One pooled client per trust/identity (usually one per site), shared by that site's targets."""
        tls = self._tls(target)
        if tls not in self._clients:
            n = self.cfg.concurrency
            self._clients[tls] = httpx.AsyncClient(
                verify=self._verify(*tls), follow_redirects=False, trust_env=False,
                timeout=httpx.Timeout(self.cfg.timeout_seconds),
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))
        return self._clients[tls]

    async def get(self, target: ProbeTarget, sem: asyncio.Semaphore) -> tuple[bool, int, float]:
        """(ok, HTTP status or 0, seconds) of one bounded GET."""
        timeout = target.timeout_seconds or self.cfg.timeout_seconds
        code = 0
        async with sem:
            start = time.monotonic()
            try:
                # wait_for is the hard bound: it also covers DNS and a server that trickles bytes.
                resp = await asyncio.wait_for(self.client(target).get(str(target.url)), timeout=timeout)
                code = resp.status_code
                ok = code in target.expected_status
            except (httpx.HTTPError, TimeoutError, OSError, ssl.SSLError):
                ok = False
            return ok, code, time.monotonic() - start

    async def local_ok(self, sem: asyncio.Semaphore) -> bool:
        if self.local is None:
            return True
        ok = (await self.get(self.local, sem))[0]
        self.local_up.set(1 if ok else 0)
        return ok

    async def run_round(self) -> RoundResult:
        start = time.monotonic()
        sem = asyncio.Semaphore(self.cfg.concurrency)
        # Checked before and after: a round during which the own site was cut off proves nothing about the
        # others, and counting it would burn a healthy site's budget (with two sites, both would page).
        if not await self.local_ok(sem):
            self.skipped.inc()
            return RoundResult(0, 0, time.monotonic() - start)
        results = await asyncio.gather(*(self.get(t, sem) for t, _ in self.targets))
        if not await self.local_ok(sem):
            self.skipped.inc()
            return RoundResult(0, 0, time.monotonic() - start)
        for (_, labels), (ok, code, elapsed) in zip(self.targets, results, strict=True):
            self.total.labels(*labels).inc()
            if not ok:
                self.failures.labels(*labels).inc()
            self.up.labels(*labels).set(1 if ok else 0)
            self.status.labels(*labels).set(code)
            self.duration.labels(*labels).observe(elapsed)
        ok = sum(r[0] for r in results)
        return RoundResult(ok, len(results) - ok, time.monotonic() - start)

    async def refresh(self) -> None:
        await self.run_round()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.aclose()
