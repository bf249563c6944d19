"""Cross-site availability prober: this site GETs the other sites' API, gateway and S3 endpoints.

Counters of probes and failures (not just an up/down gauge) are what the SLO burn-rate rules divide,
so the error budget of the 99.982% Tier-III target is measured over real probe outcomes (SC-AVL-01).

A probe is one HTTP/1.1 GET on asyncio streams over pooled keep-alive connections, `concurrency` at a time.
Not httpx: over 1,000 targets its pool checked every pooled connection's expiry through anyio on each request,
~4 ms of CPU per probe; this client takes under 0.1 ms, and the /metrics render (~0.25 ms per target) is most of
what remains (bench/bench_exporters.py measures it against blackbox_exporter).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitoring.exporters.config import ProberConfig, ProbeTarget
from monitoring.exporters.core import Exporter

LABELS = ["source_site", "target_site", "service"]
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# A response head longer than this is not a health endpoint's: the probe fails (asyncio.LimitOverrunError).
HEAD_LIMIT = 64 * 1024
USER_AGENT = "sovcloud-prober"


@dataclass
class RoundResult:
    ok: int
    failed: int
    seconds: float


class Stale(ConnectionError):
    """The server closed the connection before any byte of a response: on a reused keep-alive connection the
    server's idle timeout, not an outage (the GET is retried once on a new connection)."""


async def read_response(reader: asyncio.StreamReader, keep_body: bool = False) -> tuple[int, bytes, bool]:
    """(status, body if keep_body else b"", whether the connection may carry another request) of one HTTP/1.x
    response, the body read to its end (RFC 9112 section 6.3 framing). A malformed response raises ValueError."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            if not err.partial:
                raise Stale("connection closed before a response") from err
            raise
        lines = head.split(b"\r\n")
        version, code, *_ = lines[0].split(None, 2)
        status = int(code)
        if not version.startswith(b"HTTP/1.") or not 100 <= status <= 599:
            raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        if not 100 <= status < 200 or status == 101:
            break  # 1xx other than 101 are interim: the final response follows
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ValueError(f"malformed header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
    reusable = version == b"HTTP/1.1" and b"close" not in headers.get(b"connection", b"").lower()
    body: list[bytes] = []
    if 100 <= status < 200 or status in (204, 304):
        reusable = reusable and status != 101
    elif b"transfer-encoding" in headers:
        if not headers[b"transfer-encoding"].lower().endswith(b"chunked"):
            await _until_eof(reader, body, keep_body)
            return status, b"".join(body), False
        while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16):
            await _exactly(reader, size, body, keep_body)
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass  # trailer fields
    elif b"content-length" in headers:
        await _exactly(reader, int(headers[b"content-length"]), body, keep_body)
    else:
        await _until_eof(reader, body, keep_body)
        reusable = False
    return status, b"".join(body), reusable


async def _exactly(reader: asyncio.StreamReader, n: int, body: list[bytes], keep: bool) -> None:
    if n < 0:
        raise ValueError(f"negative length {n}")
    while n:
        chunk = await reader.read(min(n, 65536))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(chunk)
        if keep:
            body.append(chunk)


async def _until_eof(reader: asyncio.StreamReader, body: list[bytes], keep: bool) -> None:
    while chunk := await reader.read(65536):
        if keep:
            body.append(chunk)


@dataclass(frozen=True)
class Get:
    """A GET prepared once per target: where to connect and the request's bytes."""
    host: str
    port: int
    tls: tuple | None  # the target's (ca_file, client_cert_file, client_key_file) over https, None over http
    request: bytes

    @property
    def pool_key(self) -> Hashable:
        return self.host, self.port, self.tls

    @classmethod
    def of(cls, url, tls: tuple | None, user_agent: str = USER_AGENT) -> Get:
        """From a pydantic HttpUrl (what the config holds)."""
        host = url.host.strip("[]")  # an IPv6 literal comes bracketed
        default = 443 if url.scheme == "https" else 80
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        fields = [f"Host: {url.host}" + (f":{url.port}" if url.port != default else ""),
                  f"User-Agent: {user_agent}", "Accept: */*"]
        if url.username:
            userinfo = f"{unquote(url.username)}:{unquote(url.password or '')}".encode()
            fields.append(f"Authorization: Basic {base64.b64encode(userinfo).decode()}")
        request = f"GET {target} HTTP/1.1\r\n" + "".join(f"{f}\r\n" for f in fields) + "\r\n"
        return cls(host, url.port or default, tls if url.scheme == "https" else None, request.encode())


class Http1Pool:
    """Keep-alive HTTP/1.1 connections by (host, port, TLS identity), on the running event loop."""

    # False: a new connection per GET, as blackbox_exporter does (the bench measures both ways).
    keep_alive = True

    def __init__(self, context) -> None:
        self._context = context  # tls tuple -> ssl.SSLContext
        self._idle: dict[Hashable, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def get(self, req: Get) -> int:
        """The status of one GET; raises OSError (TLS errors included), EOFError, ValueError or LimitOverrunError
        when no complete response came. Callers bound it in time: a timeout cancels it and closes its connection."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a pool outlives an event loop only in tests; its connections do not
            self._idle, self._loop = {}, loop
        idle = self._idle.get(req.pool_key)
        while idle:
            reader, writer = idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.transport.abort()
                continue
            try:
                return await self._exchange(req, reader, writer)
            except Stale:
                break  # the server timed the idle connection out: once more on a new one
        if req.tls is None:
            reader, writer = await asyncio.open_connection(req.host, req.port, limit=HEAD_LIMIT)
        else:
            reader, writer = await asyncio.open_connection(req.host, req.port, limit=HEAD_LIMIT,
                                                           ssl=self._context(req.tls), server_hostname=req.host)
        return await self._exchange(req, reader, writer)

    async def _exchange(self, req: Get, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        try:
            writer.write(req.request)
            status, _, reusable = await read_response(reader)
        except BaseException:  # a failure or the caller's timeout: this connection's state is unknown
            writer.transport.abort()
            raise
        if reusable and self.keep_alive and not reader.at_eof():
            self._idle.setdefault(req.pool_key, []).append((reader, writer))
        else:
            writer.close()
        return status

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for _, writer in conns:
                writer.transport.abort()
        await asyncio.sleep(0)  # the transports close in a callback of the loop


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
        # Each target's series, looked up once (no label lookup per probe). The counters are zero-initialised:
        # rate() over a counter that appears at its first failure misses it. The others appear with the first
        # counted round: an `up 0` scraped before any probe ran would read as an outage.
        self._counters = [(self.total.labels(*labels), self.failures.labels(*labels)) for _, labels in self.targets]
        self._gauges: list[tuple] = []
        self._gets = [self._prepare(t) for t, _ in self.targets]
        self._contexts: dict[tuple, ssl.SSLContext] = {}
        self.pool = Http1Pool(self._context)
        self.local = (ProbeTarget(site=cfg.source_site, service="gateway", url=cfg.local_check_url)
                      if cfg.local_check_url else None)
        self._local_get = self._prepare(self.local) if self.local else None
        self.local_up = Gauge("sovcloud_prober_local_up", "1 if the last check of local_check_url succeeded",
                              ["source_site"], registry=r).labels(cfg.source_site)
        self.skipped = Counter("sovcloud_probe_rounds_skipped_total", "Rounds not counted: the own site's "
                               "local_check_url failed", ["source_site"], registry=r).labels(cfg.source_site)

    def _prepare(self, target: ProbeTarget) -> tuple[ProbeTarget, Get, float]:
        tls = (target.ca_file or self.cfg.ca_file, target.client_cert_file, target.client_key_file)
        return target, Get.of(target.url, tls), target.timeout_seconds or self.cfg.timeout_seconds

    def _context(self, tls: tuple[Path | None, Path | None, Path | None]) -> ssl.SSLContext:
        """One context per trust/identity (usually one per site), made at its first probe: a missing CA file
        fails that site's probes (OSError), not the prober."""
        if tls not in self._contexts:
            ca, cert, key = tls
            ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # SC-CRY-01: a TLS 1.0/1.1 endpoint counts as down
            if not self.cfg.verify_tls:
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            if cert:
                ctx.load_cert_chain(cert, key)
            self._contexts[tls] = ctx
        return self._contexts[tls]

    async def get(self, prepared: tuple[ProbeTarget, Get, float]) -> tuple[bool, int, float]:
        """(ok, HTTP status or 0, seconds) of one bounded GET."""
        target, req, timeout = prepared
        code = 0
        start = time.monotonic()
        try:
            # The hard bound: it also covers DNS, the TLS handshake and a server that trickles bytes.
            async with asyncio.timeout(timeout):
                code = await self.pool.get(req)
            ok = code in target.expected_status
        except (OSError, EOFError, ValueError, asyncio.LimitOverrunError):  # TimeoutError and ssl.SSLError too
            ok = False
        return ok, code, time.monotonic() - start

    async def local_ok(self) -> bool:
        if self._local_get is None:
            return True
        ok = (await self.get(self._local_get))[0]
        self.local_up.set(1 if ok else 0)
        return ok

    async def probe_all(self) -> list[tuple[bool, int, float]]:
        """Every target, `concurrency` workers each taking the next one: no task or semaphore wait per target."""
        results: list[tuple[bool, int, float]] = [(False, 0, 0.0)] * len(self._gets)
        todo = iter(enumerate(self._gets))

        async def worker() -> None:
            for i, prepared in todo:
                results[i] = await self.get(prepared)

        await asyncio.gather(*(worker() for _ in range(min(self.cfg.concurrency, len(self._gets)))))
        return results

    async def run_round(self) -> RoundResult:
        start = time.monotonic()
        # Checked before and after: a round during which the own site was cut off proves nothing about the
        # others, and counting it would burn a healthy site's budget (with two sites, both would page).
        if not await self.local_ok():
            self.skipped.inc()
            return RoundResult(0, 0, time.monotonic() - start)
        results = await self.probe_all()
        if not await self.local_ok():
            self.skipped.inc()
            return RoundResult(0, 0, time.monotonic() - start)
        if not self._gauges:
            self._gauges = [(self.up.labels(*labels), self.status.labels(*labels), self.duration.labels(*labels))
                            for _, labels in self.targets]
        for (total, failures), (up, status, duration), (ok, code, elapsed) in zip(
                self._counters, self._gauges, results, strict=True):
            total.inc()
            if not ok:
                failures.inc()
            up.set(1 if ok else 0)
            status.set(code)
            duration.observe(elapsed)
        ok = sum(r[0] for r in results)
        return RoundResult(ok, len(results) - ok, time.monotonic() - start)

    async def refresh(self) -> None:
        await self.run_round()

    async def aclose(self) -> None:
        await self.pool.aclose()
