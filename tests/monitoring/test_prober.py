"""The availability prober against real HTTP(S) servers on loopback."""

from __future__ import annotations

import asyncio
import itertools
import ssl
import urllib.request

import pytest

from monitoring.exporters import config
from monitoring.exporters.core import serve
from monitoring.exporters.prober import HEAD_LIMIT, Get, Prober, Stale, read_response

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
    # ... but no `up` before a probe ran: a 0 there would read as an outage.
    assert val(p, "sovcloud_probe_up", "dc-almaty", "api") is None
    run_round(p)
    assert val(p, "sovcloud_probe_up", "dc-almaty", "api") == 1


def test_every_probe_is_time_bounded(http_site):
    site = http_site({"/slow": (200, 10), "/fast": (200, 0)})
    p = make([{"site": "dc-almaty", "service": "api", "url": site.base + "/slow"},
              {"site": "dc-almaty", "service": "gateway", "url": site.base + "/fast"},
              {"site": "dc-shymkent", "service": "api", "url": site.base + "/slow", "timeout_seconds": 0.3}],
             timeout_seconds=0.6, interval_seconds=5)
    r = run_round(p)
    assert r.failed == 2 and r.ok == 1
    # The slow target answers after 10 s: the round ended before either slow probe was answered (the fast one
    # was), so each gave up on its timeout rather than waiting for the answer.
    assert site.answered == ["/fast"], site.answered
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


# --- the HTTP/1.1 client under the probes: framing, keep-alive, servers that close -----------------------------

def _read(data: bytes, keep_body: bool = True):
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_response(reader, keep_body=keep_body)
    return asyncio.run(go())


@pytest.mark.parametrize(("data", "expected"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", (200, b"ok\n", True)),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nok\n\r\n2\r\nok\r\n0\r\nX-T: y\r\n\r\n",
     (200, b"ok\nok", True)),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", (204, b"", True)),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", (304, b"", True)),  # no body whatever it says
    (b"HTTP/1.1 503 Unavailable\r\nContent-Length: 4\r\nConnection: Close\r\n\r\ndown", (503, b"down", False)),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", (200, b"ok", False)),
    (b"HTTP/1.1 200 OK\r\n\r\nuntil the server closes", (200, b"until the server closes", False)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw", (200, b"raw", False)),
])
def test_response_framing(data, expected):
    assert _read(data) == expected
    assert _read(data, keep_body=False) == (expected[0], b"", expected[2])  # the prober reads bodies to discard


@pytest.mark.parametrize(("data", "error"), [
    (b"", Stale),  # closed before any byte: on a reused connection the GET is retried once
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok", asyncio.IncompleteReadError),
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", ValueError),
    (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", ValueError),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", ValueError),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", ValueError),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n", ValueError),
])
def test_malformed_or_cut_responses_raise(data, error):
    with pytest.raises(error):
        _read(data)


def test_request_head_names_host_port_path_and_credentials():
    cfg = config.parse("prober", {"source_site": "dc-astana", "targets": [
        {"site": "dc-almaty", "service": "api", "url": "https://[::1]:6443/readyz?verbose=1"},
        {"site": "dc-almaty", "service": "s3", "url": "https://s3.dc-almaty.gov.kz"},
        {"site": "dc-almaty", "service": "gateway", "url": "http://probe:p%40ss@10.0.0.1:8080"}]})
    v6, s3, basic = (Get.of(t.url, ("ca",)) for t in cfg.targets)
    assert (v6.host, v6.port, v6.tls) == ("::1", 6443, ("ca",))
    assert v6.request.startswith(b"GET /readyz?verbose=1 HTTP/1.1\r\nHost: [::1]:6443\r\n")
    assert s3.request.startswith(b"GET / HTTP/1.1\r\nHost: s3.dc-almaty.gov.kz\r\n")  # default port not named
    assert (basic.port, basic.tls) == (8080, None)  # plain http: no TLS identity in its pool key
    assert b"\r\nAuthorization: Basic cHJvYmU6cEBzcw==\r\n" in basic.request  # probe:p@ss
    assert basic.request.endswith(b"\r\n\r\n")


class RawSite:
    """An HTTP/1.1 server on the running event loop: answer(path, nth request on its connection) -> the bytes to
    send, then whether to close; None closes without answering. Counts the connections it accepted."""

    def __init__(self, answer) -> None:
        self.answer, self.connections, self.server, self.handlers = answer, 0, None, set()

    async def __aenter__(self) -> RawSite:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        if self.handlers:  # each ends when the prober (closed before) closes its end
            await asyncio.wait(self.handlers, timeout=5)

    async def _handle(self, reader, writer) -> None:
        self.connections += 1
        self.handlers.add(asyncio.current_task())
        try:
            for nth in itertools.count():
                path = (await reader.readuntil(b"\r\n\r\n")).split(b" ")[1].decode()
                out = self.answer(path, nth)
                if out is None:
                    break
                writer.write(out[0])
                await writer.drain()
                if out[1]:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def rounds_against(answer, paths, n: int = 2, **kw):
    """n rounds of a prober (one worker unless kw says otherwise) over `paths` of a RawSite: (results, prober,
    connections the site accepted)."""
    async def go():
        async with RawSite(answer) as site:
            p = make([{"site": f"dc-s{i}", "service": "api", "url": site.base + path,
                       "expected_status": [200, 204]} for i, path in enumerate(paths)], **{"concurrency": 1, **kw})
            try:
                return [await p.run_round() for _ in range(n)], p, site.connections
            finally:
                await p.aclose()
    return asyncio.run(go())


CANNED = {
    "/len": (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", False),
    "/chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n\r\n", False),
    "/interim": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", False),
    "/down": (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown", False),
}


def test_one_kept_alive_connection_carries_every_probe():
    """One worker, four targets with differently framed answers, two rounds: all eight GETs on one connection.
    Reading one answer's body wrongly would misread the next answer on it."""
    results, p, connections = rounds_against(lambda path, nth: CANNED[path], list(CANNED))
    assert [(r.ok, r.failed) for r in results] == [(3, 1), (3, 1)]
    assert connections == 1
    assert val(p, "sovcloud_probe_http_status_code", "dc-s3", "api") == 503
    assert val(p, "sovcloud_probe_up", "dc-s2", "api") == 1  # 204 after an interim 100

    # The bench's reference mode: a new connection for every GET, same outcomes.
    async def fresh():
        async with RawSite(lambda path, nth: CANNED[path]) as site:
            q = make([{"site": f"dc-s{i}", "service": "api", "url": site.base + path,
                       "expected_status": [200, 204]} for i, path in enumerate(CANNED)], concurrency=1)
            q.pool.keep_alive = False
            r = await q.run_round()
            await q.aclose()
            return r, site.connections
    r, connections = asyncio.run(fresh())
    assert ((r.ok, r.failed), connections) == ((3, 1), 4)


def test_a_connection_the_server_closes_is_not_reused():
    """Connection: close, HTTP/1.0 and a body that ends when the server closes: each next GET opens anew."""
    answers = {"/close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", True),
               "/http10": (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
               "/eof": (b"HTTP/1.1 200 OK\r\n\r\nthe body ends here", True)}
    results, _, connections = rounds_against(lambda path, nth: answers[path], list(answers))
    assert [(r.ok, r.failed) for r in results] == [(3, 0), (3, 0)]
    assert connections == 6


def test_a_kept_alive_connection_closed_by_the_server_is_retried_once():
    """A server that answers one GET per connection and closes the connection at the next request (its idle
    timeout racing the GET): every probe is up, each after the first retried on a new connection. The negative
    control: a server that closes every connection without answering is down, retried on no new connection."""
    results, p, connections = rounds_against(lambda path, nth: CANNED["/len"] if nth == 0 else None,
                                             ["/a", "/b", "/c"])
    assert [(r.ok, r.failed) for r in results] == [(3, 0), (3, 0)]
    assert connections == 6  # one per GET: the second GET on each connection was refused and retried anew

    results, p, connections = rounds_against(lambda path, nth: None, ["/a", "/b", "/c"])
    assert [(r.ok, r.failed) for r in results] == [(0, 3), (0, 3)]
    assert connections == 6
    assert val(p, "sovcloud_probe_http_status_code", "dc-s0", "api") == 0


def test_garbage_and_oversized_answers_are_down_and_do_not_stop_the_round():
    answers = {"/ok": (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False),
               "/ssh": (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", False),
               "/huge": (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"x" * (HEAD_LIMIT + 1) + b"\r\n\r\n", False)}
    results, p, _ = rounds_against(lambda path, nth: answers[path], list(answers), n=1, concurrency=3)
    assert (results[0].ok, results[0].failed) == (1, 2)
    assert val(p, "sovcloud_probe_up", "dc-s0", "api") == 1
    assert val(p, "sovcloud_probe_http_status_code", "dc-s2", "api") == 0
