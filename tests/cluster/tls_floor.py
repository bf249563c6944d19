"""SC-CRY-01's TLS floor, proven with a probe that is itself proven able to speak the old protocol.

A refusal of TLS 1.1 proves nothing if the client would not have offered it: the host's OpenSSL (security level 2)
refuses TLS 1.1 by itself, so `openssl s_client -tls1_1` "fails" against any server. The probe here lowers its own
floor (`@SECLEVEL=0`, minimum and maximum TLS 1.1) and is first seen connecting to a deliberately weak loopback
server; only then does a refusal by the endpoint count. "TLS 1.2 accepted" is a handshake capped at 1.2 whose
negotiated version is read back, so a server that speaks only TLS 1.3 fails it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

V = ssl.TLSVersion
OLD = V.TLSv1_1
# Every cipher and signature OpenSSL still has, old ones included: the probe must not refuse on the server's behalf.
ANY_CIPHER = "DEFAULT:@SECLEVEL=0"


@dataclass(frozen=True)
class ClientCert:
    """A client certificate to present (etcd requires one before it completes any handshake)."""
    cert: Path
    key: Path


def _context(version: ssl.TLSVersion, server: bool, cert: ClientCert | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():  # TLSv1_1 is deprecated in ssl: that is the point of asking for it
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    ctx.set_ciphers(ANY_CIPHER)
    if not server:
        # Only the protocol is under test here; who the server is, is other tests' business.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if cert is not None:
            ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


def negotiate(host: str, port: int, version: ssl.TLSVersion, *, server_hostname: str | None = None,
              client_cert: ClientCert | None = None, timeout: float = 10) -> str | None:
    """The protocol negotiated by a handshake offering exactly `version`, or None if the server refused it.

    A TCP connection that cannot be made raises (OSError): an unreachable endpoint is not a refusal.
    """
    ctx = _context(version, server=False, cert=client_cert)
    with socket.create_connection((host, port), timeout=timeout) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=server_hostname or host) as tls:
                return tls.version()
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            # An alert (protocol_version, handshake_failure) or the server hanging up on the ClientHello.
            return None


@contextlib.contextmanager
def local_server(version: ssl.TLSVersion) -> Iterator[tuple[str, int]]:
    """A loopback TLS server that speaks only `version`: with TLS 1.1, the deliberately weak server of the positive
    control."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak.localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1)).sign(key, hashes.SHA256()))
    ctx = _context(version, server=True)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (Path(d) / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        ctx.load_cert_chain(Path(d) / "c.pem", Path(d) / "k.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                ctx.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve, name="weak-tls-server", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def assert_probe_speaks_tls_1_1() -> None:
    """The positive control: the probe completes a TLS 1.1 handshake with a server that allows it."""
    with local_server(OLD) as (host, port):
        got = negotiate(host, port, OLD)
    assert got == "TLSv1.1", (
        f"the TLS 1.1 probe could not connect to a loopback server that allows TLS 1.1 (got {got}): this "
        "machine's OpenSSL cannot offer TLS 1.1 even at @SECLEVEL=0, so a refusal by an endpoint would prove nothing")


def assert_tls_floor(host: str, port: int, *, server_hostname: str | None = None,
                     client_cert: ClientCert | None = None) -> str:
    """SC-CRY-01 on one endpoint: the positive control passes, the endpoint refuses TLS 1.1 and negotiates TLS 1.2
    when offered at most 1.2. Returns a line of evidence."""
    assert_probe_speaks_tls_1_1()
    target = f"{host}:{port}" + (f" ({server_hostname})" if server_hostname else "")
    old = negotiate(host, port, OLD, server_hostname=server_hostname, client_cert=client_cert)
    assert old is None, f"{target} accepted a TLS 1.1 handshake (negotiated {old}): the floor is below TLS 1.2"
    new = negotiate(host, port, V.TLSv1_2, server_hostname=server_hostname, client_cert=client_cert)
    assert new == "TLSv1.2", f"{target} did not negotiate TLS 1.2 when offered at most TLS 1.2 (got {new})"
    return f"{target}: TLS 1.1 refused (the same probe speaks it to a weak server), TLS 1.2 negotiated"
