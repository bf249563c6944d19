"""Transport-link exporter fed by a fixture script standing in for `wg show all dump`."""

import asyncio
import os
import stat
import sys
import time

import pytest

from monitoring.exporters import config
from monitoring.exporters.transport import TransportExporter, parse_dump


def script(tmp_path, body: str) -> str:
    p = tmp_path / "wg"
    p.write_text(f"#!{sys.executable}\n{body}\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def dump(now: int) -> str:
    lines = [
        ["wg0", "PRIV", "PUBA", "51820", "off"],
        ["wg0", "PUBB", "(none)", "10.9.0.2:51820", "10.8.0.2/32", str(now - 30), "1000", "2000", "25"],
        ["wg0", "PUBC", "(none)", "10.9.0.3:51820", "10.8.0.3/32", str(now - 600), "5", "6", "25"],
        ["wg0", "PUBX", "(none)", "(none)", "10.8.0.9/32", "0", "0", "0", "off"],
    ]
    return "\n".join("\t".join(f) for f in lines) + "\n"


def cfg(cmd: list[str], **kw):
    return config.parse("transport", {"command": cmd, "peers": [
        {"public_key": "PUBB", "site": "dc-almaty"}, {"public_key": "PUBC", "site": "dc-shymkent"},
        {"public_key": "PUBD", "site": "dc-turkistan"}], **kw})


def sample(e, name, peer):
    return next(s.value for m in e.registry.collect() for s in m.samples
                if s.name == name and s.labels.get("peer") == peer)


def test_dump_to_metrics(tmp_path):
    now = int(time.time())
    fixture = tmp_path / "dump.txt"
    fixture.write_text(dump(now))
    cmd = script(tmp_path, f"print(open({str(fixture)!r}).read(), end='')")
    e = TransportExporter(cfg([cmd]))
    assert asyncio.run(e.refresh_once()) is True
    assert sample(e, "sovcloud_transport_tunnel_up", "PUBB") == 1
    assert sample(e, "sovcloud_transport_tunnel_up", "PUBC") == 0      # 600 s > 180 s without handshake
    assert sample(e, "sovcloud_transport_tunnel_up", "PUBX") == 0      # never handshook
    assert sample(e, "sovcloud_transport_tunnel_up", "PUBD") == 0      # configured but missing: down
    assert sample(e, "sovcloud_transport_receive_bytes_total", "PUBB") == 1000
    assert sample(e, "sovcloud_transport_transmit_bytes_total", "PUBB") == 2000
    assert 29 <= sample(e, "sovcloud_transport_handshake_age_seconds", "PUBB") < 40
    assert e.registry.get_sample_value("sovcloud_transport_dump_success") == 1


def test_failing_or_hanging_command_marks_every_peer_down(tmp_path):
    pid_file = tmp_path / "hung.pid"
    # The hanging one notes its pid, and would write `done` after 30 s: the exporter must end it before.
    hang = f"import os, pathlib, time; p = pathlib.Path({str(pid_file)!r}); p.write_text(str(os.getpid())); " \
           "time.sleep(30); p.write_text('done')"
    for body in ("import sys; sys.exit(1)", hang, "print('garbage')"):
        e = TransportExporter(cfg([script(tmp_path, body)], timeout_seconds=0.5))
        assert asyncio.run(e.refresh_once()) is False
        assert e.registry.get_sample_value("sovcloud_transport_dump_success") == 0
        assert sample(e, "sovcloud_transport_tunnel_up", "PUBB") == 0
    # The hanging command was killed on its timeout, not waited for: its process is gone and never finished.
    noted = pid_file.read_text()
    assert noted != "done", "the hanging command ran to its end"
    with pytest.raises(ProcessLookupError):
        os.kill(int(noted), 0)


def test_parse_dump_rejects_malformed_lines():
    import pytest

    from monitoring.exporters.transport import DumpError

    with pytest.raises(DumpError, match="line 1: 3 fields"):
        parse_dump("a\tb\tc\n")
    with pytest.raises(DumpError, match="line 1"):
        parse_dump("wg0\tK\t(none)\te\ta\tNaN\t1\t2\toff\n")
    assert parse_dump("") == ([], [])
