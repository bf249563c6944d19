"""Real loopback servers for the monitoring tests: HTTP(S) "site" endpoints and a PKI to sign them."""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        status, delay = self.server.routes.get(self.path, (404, 0))
        if delay:
            time.sleep(delay)
        body = b"ok\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.answered.append(self.path)

    def log_message(self, *args):
        pass


class HttpSite:
    """A threaded HTTP(S) server on 127.0.0.1 answering path -> (status, delay); stop()/start() on one port."""

    def __init__(self, routes: dict[str, tuple[int, float]], tls: ssl.SSLContext | None = None,
                 port: int | None = None) -> None:
        self.routes, self.tls, self.port = routes, tls, port or free_port()
        self.server: http.server.ThreadingHTTPServer | None = None
        self.answered: list[str] = []  # the paths answered so far, in order (a delayed answer comes late)

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> HttpSite:
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        srv.daemon_threads = True
        srv.routes = self.routes
        srv.answered = self.answered
        if self.tls:
            srv.socket = self.tls.wrap_socket(srv.socket, server_side=True)
        self.server = srv
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class Pki:
    """A throwaway root CA and leaf certificates, like the project PKI issues."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sovcloud test root CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_file = base / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, days: float) -> tuple[Path, Path, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn), x509.IPAddress(
                    __import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_file, key_file = self.base / f"{cn}.pem", self.base / f"{cn}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_file, key_file, cert

    def server_context(self, cn: str, days: float, max_version=None) -> tuple[ssl.SSLContext, x509.Certificate]:
        cert_file, key_file, cert = self.issue(cn, days)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_file, key_file)
        if max_version:
            ctx.maximum_version = max_version
        return ctx, cert


@pytest.fixture
def pki(tmp_path) -> Pki:
    d = tmp_path / "pki"
    d.mkdir()
    return Pki(d)


@pytest.fixture
def http_site():
    started: list[HttpSite] = []

    def make(routes, tls=None, port=None) -> HttpSite:
        s = HttpSite(routes, tls, port).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()
