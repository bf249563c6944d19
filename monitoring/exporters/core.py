"""What every exporter shares: a refresh loop on its own interval and a /metrics endpoint.

Exporters refresh in the background rather than on scrape, so a slow target can never make a scrape
time out and several Prometheus replicas scraping one exporter do not multiply the probe traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger("monitoring.exporters")


class SnapshotCollector(Collector):
    """Serves the metric families of the last refresh; label sets that vanished vanish with them."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.families)


class Exporter:
    name = "exporter"

    def __init__(self, interval_seconds: float, timeout_seconds: float,
                 registry: CollectorRegistry | None = None) -> None:
        self.interval = interval_seconds
        self.timeout = timeout_seconds
        self.registry = registry or CollectorRegistry()
        self.refresh_ok = Gauge("sovcloud_exporter_refresh_success", "1 if the last refresh completed",
                                ["exporter"], registry=self.registry).labels(self.name)
        self.refresh_seconds = Histogram("sovcloud_exporter_refresh_duration_seconds", "Refresh wall time",
                                         ["exporter"], registry=self.registry).labels(self.name)
        self.refresh_errors = Counter("sovcloud_exporter_refresh_errors_total", "Refreshes that failed",
                                      ["exporter"], registry=self.registry).labels(self.name)

    async def refresh(self) -> None:
        raise NotImplementedError

    async def refresh_once(self) -> bool:
        start = time.monotonic()
        try:
            # The exporter-wide bound: nothing one refresh waits on can stall the next one.
            await asyncio.wait_for(self.refresh(), timeout=max(self.interval, self.timeout) * 2)
            ok = True
        except Exception as err:  # noqa: BLE001 - an exporter must keep serving whatever a target does
            log.warning("%s refresh failed: %s", self.name, err)
            self.refresh_errors.inc()
            ok = False
        self.refresh_ok.set(1 if ok else 0)
        self.refresh_seconds.observe(time.monotonic() - start)
        return ok

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            start = time.monotonic()
            await self.refresh_once()
            delay = max(0.0, self.interval - (time.monotonic() - start))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)


def serve(registry: CollectorRegistry, listen: str, cert_file: str | None = None, key_file: str | None = None,
          client_ca_file: str | None = None):
    """Start /metrics on host:port in a thread; returns (server, thread). With a certificate it serves HTTPS
    (TLS >= 1.2, SC-CRY-01) and with a client CA it admits only clients that
    present a certificate from that CA: an endpoint that leaves the node is encrypted and authenticated."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--listen {listen!r}: use HOST:PORT, e.g. 127.0.0.1:9470")
    if (cert_file is None) != (key_file is None):
        raise ValueError("--tls-cert-file and --tls-key-file: give both (a certificate needs its key) or neither")
    if client_ca_file and not cert_file:
        raise ValueError("--tls-client-ca-file needs --tls-cert-file/--tls-key-file: client certificates are "
                         "verified only over TLS")
    return start_http_server(int(port), addr=host.strip("[]"), registry=registry, certfile=cert_file,
                             keyfile=key_file, client_cafile=client_ca_file,
                             client_auth_required=client_ca_file is not None,
                             tls_min_version=ssl.TLSVersion.TLSv1_2)
