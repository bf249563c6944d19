"""Certificate expiry exporter over PEM files/dirs and a live TLS endpoint."""

import asyncio

from monitoring.exporters import config
from monitoring.exporters.certs import CertExporter


def refresh(cfg: dict) -> CertExporter:
    e = CertExporter(config.parse("certs", cfg))
    assert asyncio.run(e.refresh_once()) is True
    return e


def not_after(e: CertExporter) -> dict[str, float]:
    return {s.labels["subject"]: s.value for m in e.registry.collect() for s in m.samples
            if s.name == "sovcloud_cert_not_after_timestamp_seconds"}


def test_pem_dir_and_bundle(pki, tmp_path):
    _, _, api = pki.issue("api.dc-astana", days=10)
    _, _, gw = pki.issue("gw.dc-astana", days=200)
    bundle = (pki.base / "api.dc-astana.pem").read_bytes() + pki.ca_file.read_bytes()
    (pki.base / "bundle.crt").write_bytes(bundle)
    (pki.base / "key.pem").write_bytes((pki.base / "gw.dc-astana.key").read_bytes())
    e = refresh({"paths": [str(pki.base)]})
    got = not_after(e)
    assert got["CN=api.dc-astana"] == api.not_valid_after_utc.timestamp()
    assert got["CN=gw.dc-astana"] == gw.not_valid_after_utc.timestamp()
    assert "CN=sovcloud test root CA" in got
    # A key in .pem form next to the certificates is skipped, not an error.
    assert e.registry.get_sample_value("sovcloud_cert_source_ok", {"source": str(pki.base / "key.pem")}) == 1


def test_missing_path_and_garbage_are_reported(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    e = refresh({"paths": [str(tmp_path / "nope"), str(bad)]})
    assert e.registry.get_sample_value("sovcloud_cert_source_ok", {"source": str(tmp_path / "nope")}) == 0
    assert e.registry.get_sample_value("sovcloud_cert_source_ok", {"source": str(bad)}) == 0


def test_tls_endpoint_even_when_expired(http_site, pki):
    # An already-expired certificate must still be read and reported (a verifying client would just fail).
    ctx, cert = pki.server_context("127.0.0.1", days=-0.5)
    site = http_site({"/": (200, 0)}, tls=ctx)
    e = refresh({"endpoints": [{"host": "127.0.0.1", "port": site.port},
                               {"host": "127.0.0.1", "port": 9}], "timeout_seconds": 2})
    assert not_after(e)["CN=127.0.0.1"] == cert.not_valid_after_utc.timestamp()
    assert e.registry.get_sample_value("sovcloud_tls_version_info",
                                       {"source": f"127.0.0.1:{site.port}", "version": "TLSv1.3"}) == 1
    assert e.registry.get_sample_value("sovcloud_cert_source_ok", {"source": "127.0.0.1:9"}) == 0


def test_tls_endpoint_by_server_name(http_site, pki):
    # A gateway serves each published service by its name (SNI) on one address: the exporter asks for the
    # name and its source says which name it read, so two names on one address are two sources.
    ctx, cert = pki.server_context("portal.example.kz", days=30)
    asked: list[str | None] = []
    ctx.sni_callback = lambda _sock, name, _ctx: asked.append(name)
    site = http_site({"/": (200, 0)}, tls=ctx)
    e = refresh({"endpoints": [{"host": "127.0.0.1", "port": site.port, "server_name": "portal.example.kz"}]})
    assert asked == ["portal.example.kz"]
    assert e.registry.get_sample_value("sovcloud_cert_source_ok",
                                       {"source": f"portal.example.kz@127.0.0.1:{site.port}"}) == 1
    assert not_after(e)["CN=portal.example.kz"] == cert.not_valid_after_utc.timestamp()
