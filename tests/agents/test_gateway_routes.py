"""The gateway route agent's decisions: which registrations are published, to which pods, with what TLS.

The agent against a real API, nginx and the Internet: tests/charts/test_pods.py (lab)."""

from __future__ import annotations

import json
import subprocess

import pytest

from agents.gateway_routes import Route, ensure_certificate, render, routes, upstreams

DOMAIN = "gov.kz"


def ns(name: str, agency: str | None) -> dict:
    return {"metadata": {"name": name, "labels": {"sovcloud.kz/agency": agency} if agency else {}}}


def cm(namespace: str, name: str, entries, created: str = "2026-01-01T00:00:00Z") -> dict:
    data = entries if isinstance(entries, str) else json.dumps(entries)
    return {"metadata": {"namespace": namespace, "name": name, "creationTimestamp": created},
            "data": {"routes.json": data}}


def entry(host: str, namespace: str, service: str = "web", port: int = 80, path: str = "/", tls: str = "1.2"):
    return {"host": host, "path": path, "tls": {"minVersion": tls},
            "backend": {"namespace": namespace, "service": service, "port": port}}


NAMESPACES = [ns("mvd-prod", "mvd"), ns("mvd-stage", "mvd"), ns("fin-prod", "fin"), ns("default", None)]


def test_an_agency_publishes_hostnames_under_the_domain_to_its_own_namespaces():
    published, refused = routes([cm("mvd-prod", "r", [entry("portal.mvd.gov.kz", "mvd-prod"),
                                                      entry("gov.kz", "mvd-stage", path="/stage", tls="1.3")])],
                                NAMESPACES, DOMAIN)
    assert refused == []
    assert [(r.host, r.path, r.namespace, r.min_tls) for r in published] == [
        ("gov.kz", "/stage", "mvd-stage", "1.3"), ("portal.mvd.gov.kz", "/", "mvd-prod", "1.2")]


@pytest.mark.parametrize(("bad", "why"), [
    (entry("portal.example.com", "mvd-prod"), "not a hostname under the government domain 'gov.kz'"),
    (entry("evilgov.kz", "mvd-prod"), "not a hostname under the government domain"),
    (entry("x.gov.kz", "fin-prod"), "backend namespace 'fin-prod' does not belong to agency 'mvd'"),
    (entry("x.gov.kz", "nowhere"), "backend namespace 'nowhere' does not belong to agency 'mvd'"),
    (entry("x.gov.kz", "mvd-prod", path="/a;b"), "is not a plain URL path"),
    (entry("x.gov.kz", "mvd-prod", tls="1.0"), "tls.minVersion '1.0' is not 1.2 or 1.3"),
    ({"host": "x.gov.kz"}, "malformed"),
])
def test_bad_registrations_are_refused_with_the_reason(bad, why):
    published, refused = routes([cm("mvd-prod", "r", [bad])], NAMESPACES, DOMAIN)
    assert published == [] and len(refused) == 1
    assert refused[0].startswith("mvd-prod/r routes[0]: ") and why in refused[0], refused


def test_only_agency_namespaces_register_and_json_must_parse():
    published, refused = routes([cm("default", "r", [entry("x.gov.kz", "default")]), cm("mvd-prod", "y", "- yaml")],
                                NAMESPACES, DOMAIN)
    assert published == []
    assert "no sovcloud.kz/agency label" in refused[0] and refused[1].startswith("mvd-prod/y: no valid routes.json")


def test_the_first_registration_of_a_hostname_and_path_keeps_it():
    first = cm("mvd-prod", "a", [entry("portal.gov.kz", "mvd-prod")], created="2026-01-01T00:00:00Z")
    later = cm("fin-prod", "b", [entry("portal.gov.kz", "fin-prod"), entry("portal.gov.kz", "fin-prod", path="/fin")],
               created="2026-02-01T00:00:00Z")
    published, refused = routes([later, first], NAMESPACES, DOMAIN)
    assert [(r.source, r.path) for r in published] == [("mvd-prod/a", "/"), ("fin-prod/b", "/fin")]
    assert refused == ["fin-prod/b routes[0]: portal.gov.kz/ is already published by mvd-prod/a"]


def _route(**kw) -> Route:
    return Route(**{"host": "portal.gov.kz", "path": "/", "min_tls": "1.2", "namespace": "mvd-prod",
                    "service": "web", "port": 80, "source": "mvd-prod/r", **kw})


SERVICES = [{"metadata": {"namespace": "mvd-prod", "name": "web"},
             "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
            {"metadata": {"namespace": "fin-prod", "name": "web"}, "spec": {"ports": [{"port": 80}]}}]


def _slice(namespace: str, service: str, port_name: str, port: int, endpoints: list[tuple[str, bool]]) -> dict:
    return {"metadata": {"namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in endpoints]}


def test_upstreams_are_the_ready_pods_behind_the_service_port():
    slices = [_slice("mvd-prod", "web", "http", 8080, [("10.64.0.5", True), ("10.64.1.7", False)]),
              _slice("mvd-prod", "web", "http", 8080, [("10.64.1.9", True)]),
              _slice("fin-prod", "web", "", 9090, [("10.64.0.6", True)]),  # same name, other agency
              _slice("mvd-prod", "other", "http", 8080, [("10.64.0.8", True)])]
    assert upstreams(_route(), SERVICES, slices) == ["10.64.0.5:8080", "10.64.1.9:8080"]
    assert upstreams(_route(port=443), SERVICES, slices) == []  # no such Service port
    assert upstreams(_route(namespace="fin-prod"), SERVICES, slices) == ["10.64.0.6:9090"]  # unnamed port


def _server(text: str, host: str) -> str:
    start = text.index(f"server_name {host};")
    return text[start:text.index("\n}\n", start)]


def test_render_serves_each_hostname_over_tls_only():
    a, b, c = _route(), _route(path="/api", min_tls="1.3"), _route(host="other.gov.kz")
    text = render([a, b, c], {a: ["10.64.0.5:8080"], b: ["10.64.0.6:8080", "10.64.1.6:8080"], c: []},
                  "/certs", ["443", "[::]:443"])
    assert "listen 80" not in text and text.count("ssl_reject_handshake on;") == 1
    portal = _server(text, "portal.gov.kz")
    # The strictest minimum of a hostname's routes applies to the hostname (one TLS handshake per name).
    assert "ssl_protocols TLSv1.3;" in portal and "ssl_certificate /certs/portal.gov.kz.crt;" in portal
    assert "location / {" in portal and "location /api {" in portal
    other = _server(text, "other.gov.kz")
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in other
    assert "return 503;" in other and "return 503;" not in portal  # no ready pod: an answer, not a hang
    assert "    server 10.64.0.6:8080;\n    server 10.64.1.6:8080;" in text
    assert render([a, b, c], {a: ["10.64.0.5:8080"], b: ["10.64.0.6:8080", "10.64.1.6:8080"], c: []},
                  "/certs", ["443", "[::]:443"]) == text  # same state, same bytes: no needless reload


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def ca(tmp_path):
    """A routes CA as the stack issues one (EC key, CA:TRUE)."""
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
                 "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
                 "-addext", "basicConstraints=critical,CA:TRUE", cwd=tmp_path)
    return tmp_path


def test_hostnames_get_certificates_from_the_routes_ca_once(ca):
    certs = ca / "certs"
    certs.mkdir()
    assert ensure_certificate("portal.gov.kz", certs, ca / "ca.crt", ca / "ca.key") is True
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca / "ca.crt"), "-verify_hostname", "portal.gov.kz",
                             "-purpose", "sslserver", str(certs / "portal.gov.kz.crt")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert (certs / "portal.gov.kz.key").stat().st_mode & 0o777 == 0o600
    assert ensure_certificate("portal.gov.kz", certs, ca / "ca.crt", ca / "ca.key") is False  # still valid
    # A new routes CA (rotation): certificates of the old one are replaced.
    assert ensure_certificate("portal.gov.kz", certs, ca / "other-ca.crt", ca / "other-ca.key") is True
    # Close to expiry: renewed.
    assert ensure_certificate("portal.gov.kz", certs, ca / "other-ca.crt", ca / "other-ca.key",
                              renew_before_s=200 * 86400) is True
