"""The TLS floor probe (tests/cluster/tls_floor.py) on loopback servers, without the lab: it passes only a server
whose floor is TLS 1.2, and fails one that allows TLS 1.1 or one that cannot negotiate TLS 1.2."""

from __future__ import annotations

import socket

import pytest

from tests.cluster.tls_floor import OLD, V, assert_probe_speaks_tls_1_1, assert_tls_floor, local_server, negotiate


def test_the_probe_speaks_tls_1_1_to_a_weak_server():
    # The positive control every endpoint check starts with: on this machine's OpenSSL the probe does offer 1.1.
    assert_probe_speaks_tls_1_1()
    with local_server(OLD) as (host, port):
        assert negotiate(host, port, OLD) == "TLSv1.1"
        assert negotiate(host, port, V.TLSv1_2) is None  # and a server that allows only 1.1 refuses 1.2


def test_floor_fails_against_a_deliberately_weak_server():
    with local_server(OLD) as (host, port), pytest.raises(AssertionError, match="accepted a TLS 1.1 handshake"):
        assert_tls_floor(host, port)


def test_floor_fails_against_a_server_that_speaks_only_tls_1_3():
    # It refuses 1.1, but "1.2 accepted" is a handshake capped at 1.2, read back: this server cannot do it.
    with local_server(V.TLSv1_3) as (host, port):
        assert negotiate(host, port, OLD) is None
        with pytest.raises(AssertionError, match=r"did not negotiate TLS 1.2 .*\(got None\)"):
            assert_tls_floor(host, port)


def test_floor_passes_a_tls_1_2_server():
    with local_server(V.TLSv1_2) as (host, port):
        assert "TLS 1.1 refused" in assert_tls_floor(host, port)


def test_an_unreachable_endpoint_is_an_error_not_a_refusal():
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            negotiate("127.0.0.1", port, OLD)
