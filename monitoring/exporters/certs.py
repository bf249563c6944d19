"""Certificate expiry exporter: PEM files/dirs of the project PKI and live TLS endpoints (SC-CRY-02).

Endpoint certificates are fetched without verification on purpose: an expired or wrongly issued
certificate must still be seen and reported, not hidden behind a handshake error. The negotiated TLS
version is exported too, so an endpoint below TLS 1.2 is visible (SC-CRY-01).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

from cryptography import x509
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from monitoring.exporters.config import CertConfig, TlsEndpoint
from monitoring.exporters.core import Exporter, SnapshotCollector

PEM_SUFFIXES = {".pem", ".crt", ".cer"}
CERT_LABELS = ["source", "subject", "issuer", "serial"]


def pem_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in PEM_SUFFIXES)
    return [path]


def load_pem_certs(path: Path) -> list[x509.Certificate]:
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return []  # a key or CSR next to the certificates is not an error
    return x509.load_pem_x509_certificates(data)


async def fetch_endpoint(ep: TlsEndpoint, timeout: float) -> tuple[x509.Certificate, str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # noqa: S323 - we report on the cert, trust is judged by the alerts
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED  # see what the endpoint really offers
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(ep.host, ep.port, ssl=ctx, server_hostname=ep.server_name or ep.host),
        timeout=timeout)
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der), sslobj.version() or ""
    finally:
        writer.close()
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), timeout=timeout)


class CertExporter(Exporter):
    name = "certs"

    def __init__(self, cfg: CertConfig, registry: CollectorRegistry | None = None) -> None:
        super().__init__(cfg.interval_seconds, cfg.timeout_seconds, registry)
        self.cfg = cfg
        self.snapshot = SnapshotCollector()
        self.registry.register(self.snapshot)

    async def refresh(self) -> None:
        not_after = GaugeMetricFamily("sovcloud_cert_not_after_timestamp_seconds", "Certificate notAfter",
                                      labels=CERT_LABELS)
        not_before = GaugeMetricFamily("sovcloud_cert_not_before_timestamp_seconds", "Certificate notBefore",
                                       labels=CERT_LABELS)
        read_ok = GaugeMetricFamily("sovcloud_cert_source_ok", "1 if the file/endpoint could be read",
                                    labels=["source"])
        tls = GaugeMetricFamily("sovcloud_tls_version_info", "Negotiated TLS version of an endpoint",
                                labels=["source", "version"])

        def add(source: str, cert: x509.Certificate) -> None:
            labels = [source, cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
                      format(cert.serial_number, "x")]
            not_after.add_metric(labels, cert.not_valid_after_utc.timestamp())
            not_before.add_metric(labels, cert.not_valid_before_utc.timestamp())

        for root in self.cfg.paths:
            files = pem_files(root) if root.exists() else []
            if not files:
                read_ok.add_metric([str(root)], 0)
            for f in files:
                try:
                    certs = load_pem_certs(f)
                except (OSError, ValueError):
                    read_ok.add_metric([str(f)], 0)
                    continue
                read_ok.add_metric([str(f)], 1)
                for c in certs:
                    add(str(f), c)
        results = await asyncio.gather(*(fetch_endpoint(ep, self.cfg.timeout_seconds)
                                         for ep in self.cfg.endpoints), return_exceptions=True)
        for ep, res in zip(self.cfg.endpoints, results, strict=True):
            # A gateway serves many names on one address: the source names the one asked for (SNI).
            source = f"{ep.server_name}@{ep.host}:{ep.port}" if ep.server_name else f"{ep.host}:{ep.port}"
            if isinstance(res, BaseException):
                read_ok.add_metric([source], 0)
                continue
            cert, version = res
            read_ok.add_metric([source], 1)
            add(source, cert)
            tls.add_metric([source, version], 1)
        self.snapshot.families = [not_after, not_before, read_ok, tls]
