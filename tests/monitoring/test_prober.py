"""The availability prober against real HTTP(S) servers on loopback."""

import asyncio
import ssl
import time
import urllib.request

from monitoring.exporters import config
from monitoring.exporters.core import serve
from monitoring.exporters.prober import Prober

L = {"source_site": "dc-astana"}


def make(targets, **kw) -> Prober:
    return Prober(config.parse("prober", {"source_site": "dc-astana", "targets": targets, **kw}))


def val(p: Prober, name: str, site: str, service: str) -> float | None:
    return p.registry.get_sample_value(name, {**L, "target_site": site, "service": service})


def run_round(p: Prober):
    async def go():
        try:
            return await p.run_round()
        finally:
            await p.aclose()
    return asyncio.run(go())


def test_counts_success_wrong_status_and_refused(http_site):
    site = http_site({"/healthz": (200, 0), "/broken": (503, 0), "/s3": (403, 0)})
    p = make([
        {"site": "dc-almaty", "service": "gateway", "url": site.base + "/healthz"},
        {"site": "dc-almaty", "service": "api", "url": site.base + "/broken"},
        # S3 answers 403 to an anonymous GET: that IS the expected healthy answer.
        {"site": "dc-almaty", "service": "s3", "url": site.base + "/s3", "expected_status": [200, 403]},
        {"site": "dc-shymkent", "service": "gateway", "url": "http://127.0.0.1:9/"},  # nothing listens
    ])
    r1, r2 = run_round(p), run_round(p)
    assert (r1.ok, r1.failed, r2.ok, r2.failed) == (2, 2, 2, 2)
    assert val(p, "sovcloud_probe_total", "dc-almaty", "gateway") == 2
    assert val(p, "sovcloud_probe_failures_total", "dc-almaty", "gateway") == 0
    assert val(p, "sovcloud_probe_up", "dc-almaty", "gateway") == 1
    assert val(p, "sovcloud_probe_failures_total", "dc-almaty", "api") == 2
    assert val(p, "sovcloud_probe_http_status_code", "dc-almaty", "api") == 503
    assert val(p, "sovcloud_probe_up", "dc-almaty", "s3") == 1
    assert val(p, "sovcloud_probe_up", "dc-shymkent", "gateway") == 0
    assert val(p, "sovcloud_probe_http_status_code", "dc-shymkent", "gateway") == 0
    assert val(p, "sovcloud_probe_duration_seconds_count", "dc-almaty", "gateway") == 2


def test_failure_counter_exists_before_first_failure(http_site):
    site = http_site({"/": (200, 0)})
    p = make([{"site": "dc-almaty", "service": "api", "url": site.base + "/"}])
    # rate() needs the zero sample: the series must exist before anything fails.
    assert val(p, "sovcloud_probe_failures_total", "dc-almaty", "api") == 0


def test_every_probe_is_time_bounded(http_site):
    site = http_site({"/slow": (200, 10), "/fast": (200, 0)})
    p = make([{"site": "dc-almaty", "service": "api", "url": site.base + "/slow"},
              {"site": "dc-almaty", "service": "gateway", "url": site.base + "/fast"},
              {"site": "dc-shymkent", "service": "api", "url": site.base + "/slow", "timeout_seconds": 0.3}],
             timeout_seconds=0.6, interval_seconds=5)
    start = time.monotonic()
    r = run_round(p)
    elapsed = time.monotonic() - start
    assert r.failed == 2 and r.ok == 1
    # The slow target answers after 10 s; a bounded round ends long before (the margin absorbs a loaded
    # machine: this is a bound, not a speed target; speed is in bench/bench_exporters.py).
    assert elapsed < 5.0, f"a round with 0.6s timeouts took {elapsed:.1f}s"
    assert val(p, "sovcloud_probe_up", "dc-almaty", "gateway") == 1

    # The per-target timeout overrides the global one: that probe gave up first.
    def duration(target_site: str) -> float:
        return p.registry.get_sample_value("sovcloud_probe_duration_seconds_sum",
                                           {**L, "target_site": target_site, "service": "api"})

    assert duration("dc-shymkent") < duration("dc-almaty")


def test_tls_verified_against_project_ca(http_site, pki):
    ctx, _ = pki.server_context("127.0.0.1", days=30)
    good = http_site({"/": (200, 0)}, tls=ctx)
    # Same server, but the prober trusts only its default store: verification must fail -> down.
    targets = [{"site": "dc-almaty", "service": "api", "url": good.base + "/"}]
    trusted = make(targets, ca_file=str(pki.ca_file))
    untrusted = make(targets)
    assert run_round(trusted).ok == 1
    assert run_round(untrusted).failed == 1


def test_per_target_trust_and_client_identity(http_site, pki, tmp_path):
    """A site API that requires a client certificate (mutual TLS): only the target carrying the identity
    and its own site's CA is up, whatever the prober-wide CA says."""
    ctx, _ = pki.server_context("127.0.0.1", days=30)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(pki.ca_file)
    api = http_site({"/readyz": (200, 0)}, tls=ctx)
    cert, key, _ = pki.issue("sovcloud-prober", days=1)
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_text(ssl.get_server_certificate(("127.0.0.1", api.port)))  # not a CA
    url = api.base + "/readyz"
    p = make([{"site": "dc-almaty", "service": "api", "url": url, "ca_file": str(pki.ca_file),
               "client_cert_file": str(cert), "client_key_file": str(key)},
              {"site": "dc-shymkent", "service": "api", "url": url, "ca_file": str(pki.ca_file)},
              {"site": "dc-aktobe", "service": "api", "url": url,
               "client_cert_file": str(cert), "client_key_file": str(key)}],
             ca_file=str(other_ca))
    r = run_round(p)
    assert (r.ok, r.failed) == (1, 2)
    assert val(p, "sovcloud_probe_up", "dc-almaty", "api") == 1
    assert val(p, "sovcloud_probe_up", "dc-shymkent", "api") == 0  # no identity: the handshake is refused
    assert val(p, "sovcloud_probe_up", "dc-aktobe", "api") == 0  # prober-wide CA does not trust the server


def test_tls_below_1_2_counts_as_down(http_site, pki):
    ctx, _ = pki.server_context("127.0.0.1", days=30, max_version=ssl.TLSVersion.TLSv1_1)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the server really offer TLS 1.1
    old = http_site({"/": (200, 0)}, tls=ctx)
    p = make([{"site": "dc-almaty", "service": "api", "url": old.base + "/"}], ca_file=str(pki.ca_file))
    assert run_round(p).failed == 1


def test_metrics_endpoint_serves_prometheus_text(http_site):
    site = http_site({"/": (200, 0)})
    p = make([{"site": "dc-almaty", "service": "gateway", "url": site.base + "/"}])
    assert asyncio.run(p.refresh_once()) is True
    from tests.monitoring.conftest import free_port

    port = free_port()
    server, _ = serve(p.registry, f"127.0.0.1:{port}")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: S310
    finally:
        server.shutdown()
    assert 'sovcloud_probe_total{service="gateway",source_site="dc-astana",target_site="dc-almaty"} 1.0' in text
    assert 'sovcloud_exporter_refresh_success{exporter="prober"} 1.0' in text


def test_rounds_while_the_own_site_is_cut_off_are_not_counted(http_site):
    """With two sites, counting probes made while the prober's own gateway is down would page for the
    healthy site: such rounds are skipped (counted in sovcloud_probe_rounds_skipped_total only)."""
    own_gw = http_site({"/healthz": (200, 0)})
    p = make([{"site": "dc-almaty", "service": "gateway", "url": "http://127.0.0.1:9/"}],  # nothing listens
             local_check_url=own_gw.base + "/healthz", timeout_seconds=3)  # refused at once, not timed out
    for _ in range(2):
        r = run_round(p)
        assert (r.ok, r.failed) == (0, 1)  # own site fine: the failure is evidence
    own_gw.stop()
    r = run_round(p)
    assert (r.ok, r.failed) == (0, 0)
    assert val(p, "sovcloud_probe_total", "dc-almaty", "gateway") == 2
    assert val(p, "sovcloud_probe_failures_total", "dc-almaty", "gateway") == 2
    assert p.registry.get_sample_value("sovcloud_prober_local_up", L) == 0
    assert p.registry.get_sample_value("sovcloud_probe_rounds_skipped_total", L) == 1
