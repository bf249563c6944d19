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
        self._client: httpx.AsyncClient | None = None

    def _verify(self) -> ssl.SSLContext | bool:
        if not self.cfg.verify_tls:
            return False
        ctx = ssl.create_default_context(cafile=str(self.cfg.ca_file) if self.cfg.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # SC-CRY-01: a TLS 1.0/1.1 endpoint counts as down
        return ctx

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            n = self.cfg.concurrency
            self._client = httpx.AsyncClient(
                verify=self._verify(), follow_redirects=False, trust_env=False,
                timeout=httpx.Timeout(self.cfg.timeout_seconds),
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))
        return self._client

    async def probe(self, target: ProbeTarget, labels: list[str], sem: asyncio.Semaphore) -> bool:
        timeout = target.timeout_seconds or self.cfg.timeout_seconds
        code = 0
        async with sem:
            start = time.monotonic()
            try:
                # wait_for is the hard bound: it also covers DNS and a server that trickles bytes.
                resp = await asyncio.wait_for(self.client().get(str(target.url)), timeout=timeout)
                code = resp.status_code
                ok = code in target.expected_status
            except (httpx.HTTPError, TimeoutError, OSError, ssl.SSLError):
                ok = False
            elapsed = time.monotonic() - start
        self.total.labels(*labels).inc()
        if not ok:
            self.failures.labels(*labels).inc()
        self.up.labels(*labels).set(1 if ok else 0)
        self.status.labels(*labels).set(code)
        self.duration.labels(*labels).observe(elapsed)
        return ok

    async def run_round(self) -> RoundResult:
        start = time.monotonic()
        sem = asyncio.Semaphore(self.cfg.concurrency)
        results = await asyncio.gather(*(self.probe(t, labels, sem) for t, labels in self.targets))
        ok = sum(results)
        return RoundResult(ok, len(results) - ok, time.monotonic() - start)

    async def refresh(self) -> None:
        await self.run_round()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
