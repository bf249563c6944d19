"""Transport-link exporter: WireGuard tunnels between sites from `wg show all dump` (SC-NET-02).

A peer is up when its latest handshake is younger than handshake_timeout_seconds; a configured peer
that is missing from the dump is down (a deleted peer must alert, not disappear).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from monitoring.exporters.config import TransportConfig
from monitoring.exporters.core import Exporter, SnapshotCollector

PEER_LABELS = ["interface", "peer", "peer_site", "endpoint"]


@dataclass
class Peer:
    interface: str
    public_key: str
    endpoint: str
    latest_handshake: int
    rx: int
    tx: int


class DumpError(ValueError):
    pass


def parse_dump(text: str) -> tuple[list[str], list[Peer]]:
    """`wg show all dump`: 5 tab-separated fields per interface line, 9 per peer line."""
    interfaces: list[str] = []
    peers: list[Peer] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        f = line.split("\t")
        try:
            if len(f) == 5:
                interfaces.append(f[0])
            elif len(f) == 9:
                endpoint = "" if f[3] == "(none)" else f[3]
                peers.append(Peer(f[0], f[1], endpoint, int(f[5]), int(f[6]), int(f[7])))
            else:
                raise DumpError(f"line {n}: {len(f)} fields, expected 5 (interface) or 9 (peer)")
        except ValueError as err:
            raise DumpError(f"line {n}: {err}") from None
    return interfaces, peers


class TransportExporter(Exporter):
    name = "transport"

    def __init__(self, cfg: TransportConfig, registry: CollectorRegistry | None = None) -> None:
        super().__init__(cfg.interval_seconds, cfg.timeout_seconds, registry)
        self.cfg = cfg
        self.sites = {p.public_key: p.site for p in cfg.peers}
        self.snapshot = SnapshotCollector()
        self.registry.register(self.snapshot)

    async def run_command(self) -> str:
        proc = await asyncio.create_subprocess_exec(*self.cfg.command, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=self.cfg.timeout_seconds)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise DumpError(f"{self.cfg.command[0]} timed out after {self.cfg.timeout_seconds}s") from None
        if proc.returncode != 0:
            raise DumpError(f"{' '.join(self.cfg.command)} exited {proc.returncode}: {err.decode()[:200]}")
        return out.decode()

    async def refresh(self) -> None:
        ok = GaugeMetricFamily("sovcloud_transport_dump_success", "1 if the wg dump command succeeded")
        try:
            _, peers = parse_dump(await self.run_command())
        except (DumpError, OSError):
            ok.add_metric([], 0)
            # Without a dump every configured peer is unknown: report them down rather than stale-up.
            peers = []
            self._publish(ok, peers)
            raise
        ok.add_metric([], 1)
        self._publish(ok, peers)

    def _publish(self, ok: GaugeMetricFamily, peers: list[Peer]) -> None:
        now = time.time()
        up = GaugeMetricFamily("sovcloud_transport_tunnel_up", "1 if the peer handshook recently",
                               labels=PEER_LABELS)
        hs = GaugeMetricFamily("sovcloud_transport_latest_handshake_timestamp_seconds",
                               "Latest handshake (0: never)", labels=PEER_LABELS)
        age = GaugeMetricFamily("sovcloud_transport_handshake_age_seconds",
                                "Seconds since the latest handshake", labels=PEER_LABELS)
        rx = CounterMetricFamily("sovcloud_transport_receive_bytes", "Bytes received from the peer",
                                 labels=PEER_LABELS)
        tx = CounterMetricFamily("sovcloud_transport_transmit_bytes", "Bytes sent to the peer",
                                 labels=PEER_LABELS)
        seen = set()
        for p in peers:
            seen.add(p.public_key)
            labels = [p.interface, p.public_key, self.sites.get(p.public_key, ""), p.endpoint]
            a = now - p.latest_handshake if p.latest_handshake else now
            up.add_metric(labels, 1 if p.latest_handshake and a < self.cfg.handshake_timeout_seconds else 0)
            hs.add_metric(labels, p.latest_handshake)
            age.add_metric(labels, a)
            rx.add_metric(labels, p.rx)
            tx.add_metric(labels, p.tx)
        for key, site in self.sites.items():
            if key not in seen:
                up.add_metric(["", key, site, ""], 0)
        self.snapshot.families = [ok, up, hs, age, rx, tx]
