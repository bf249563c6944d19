"""Availability prober vs blackbox_exporter (the reference), side by side in one run, on the same 1,000 loopback
targets: probes/s and CPU per probe of each, and the ratio.

    .venv/bin/python -m bench.bench_exporters [--targets 1000] [--rounds 5] [--concurrency 50] [--budget 40]

The targets are the paths /t/0 ... of one asyncio HTTP server on 127.0.0.1, in its own process. Our side is
one prober round over every target (what one probe interval costs), plus one /metrics render of the result
(what a scrape costs: blackbox_exporter renders each probe's metrics in its answer, so that is in its CPU too).
The reference side is blackbox_exporter (`make setup` builds it, toolchain/pins.py) answering
/probe?module=http_2xx&target=<url> for every target, asked by `--concurrency` clients over keep-alive
connections, as many as the prober's workers. CPU is each side's process CPU (user + system): the bench's own
for the prober, /proc/<pid>/stat for blackbox_exporter; the client asking blackbox_exporter (what Prometheus
would spend) and the target server are shown apart. The difference in the job: the prober keeps connections
to its targets alive between probes, blackbox_exporter opens a new one per probe (so the target server's CPU
differs too); the column "prober, new conn." is the prober doing the reference's job (Http1Pool.keep_alive off).

Bounded: --targets (<= 5000) x --rounds (<= 20) per side, each probe by its 10 s timeout, and no round starts
after --budget seconds (40); the target server and blackbox_exporter are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from prometheus_client import generate_latest

from bench import cpu_seconds
from common import process
from monitoring.exporters import config
from monitoring.exporters.prober import Prober, read_response
from toolchain import pins

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"
TIMEOUT_S = 10
BLACKBOX_CONFIG = f"""modules:
  http_2xx:
    prober: http
    timeout: {TIMEOUT_S}s
    http:
      valid_status_codes: [200]
      preferred_ip_protocol: ip4
"""


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")  # GETs only: no body to read
            if not head:
                break
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_handle, sock=sock, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def urls(port: int, n: int) -> list[str]:
    return [f"http://127.0.0.1:{port}/t/{i}" for i in range(n)]


@dataclass
class Side:
    name: str
    rates: list[float] = field(default_factory=list)  # probes/s of each round
    cpu: float = 0.0  # CPU seconds of the prober's process over all measured rounds
    probes: int = 0
    # Other CPU seconds over the same rounds: shown, not counted as the prober's.
    extra: dict[str, float] = field(default_factory=dict)
    failed: int = 0

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def per_probe_ms(self, seconds: float) -> float:
        return 1000 * seconds / self.probes

    def add(self, what: str, seconds: float) -> None:
        self.extra[what] = self.extra.get(what, 0.0) + seconds


class Ours:
    """One prober round over every target, then one /metrics render of it."""

    def __init__(self, port: int, n: int, concurrency: int, keep_alive: bool) -> None:
        self.prober = Prober(config.parse("prober", {
            "source_site": "dc-bench", "interval_seconds": 30, "timeout_seconds": TIMEOUT_S,
            "concurrency": concurrency,
            "targets": [{"site": f"site-{i:04d}", "service": "gateway", "url": u}
                        for i, u in enumerate(urls(port, n))]}))
        self.prober.pool.keep_alive = keep_alive
        self.side = Side("prober" if keep_alive else "prober, new conn.")
        self.n = n

    async def round(self, measure: bool = True) -> None:
        c0 = time.process_time()
        r = await self.prober.run_round()
        c1 = time.process_time()
        generate_latest(self.prober.registry)
        if measure:
            s = self.side
            s.cpu += time.process_time() - c0
            s.add("of which /metrics render", time.process_time() - c1)
            s.rates.append(self.n / r.seconds)
            s.probes += self.n
            s.failed += r.failed

    async def aclose(self) -> None:
        await self.prober.aclose()


class Blackbox:
    """/probe?module=http_2xx&target=<url> of blackbox_exporter for every target, over `concurrency` keep-alive
    connections."""

    def __init__(self, port: int, n: int, concurrency: int, workdir: Path) -> None:
        binary = shutil.which("blackbox_exporter")
        if binary is None:
            raise SystemExit("blackbox_exporter is not on PATH: run `make setup` (it builds it into "
                             "~/.cache/sovcloud/bin) and put that directory on PATH")
        (workdir / "blackbox.yml").write_text(BLACKBOX_CONFIG)
        self.port = _free_port()
        self.log = (workdir / "blackbox.log").open("w")
        self.proc = subprocess.Popen([binary, f"--config.file={workdir / 'blackbox.yml'}", "--log.level=warn",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=self.log)
        self.paths = [f"/probe?module=http_2xx&target={quote(u, safe='')}" for u in urls(port, n)]
        self.concurrency = concurrency
        self.side = Side(f"blackbox_exporter {pins.BLACKBOX_EXPORTER}")

    async def round(self, measure: bool = True) -> None:
        c0, bb0, t0 = time.process_time(), cpu_seconds(self.proc.pid), time.perf_counter()
        failed = await self._ask()
        seconds = time.perf_counter() - t0
        if measure:
            s = self.side
            s.cpu += cpu_seconds(self.proc.pid) - bb0
            s.add("client asking it (not counted)", time.process_time() - c0)
            s.rates.append(len(self.paths) / seconds)
            s.probes += len(self.paths)
            s.failed += failed

    async def _ask(self) -> int:
        """Every /probe path over `concurrency` keep-alive connections; the probes that failed."""
        todo, failed = iter(self.paths), 0

        async def client() -> None:
            nonlocal failed
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                for path in todo:
                    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode())
                    status, body, reusable = await asyncio.wait_for(read_response(reader, keep_body=True),
                                                                    TIMEOUT_S * 2)
                    failed += status != 200 or b"\nprobe_success 1\n" not in body
                    if not reusable:
                        raise RuntimeError(f"blackbox_exporter closed the connection after {path}")
            finally:
                writer.close()

        await asyncio.gather(*(client() for _ in range(self.concurrency)))
        return failed

    def stop(self) -> None:
        process.stop(self.proc)
        self.log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def compare(sides: list[Ours | Blackbox], rounds: int, budget_s: float, server_pid: int) -> None:
    """A warm-up round of each side (opens the pooled connections), then up to `rounds` rounds of each,
    interleaved (a change in the machine's load falls on every side alike), fewer once `budget_s` has passed."""
    deadline = time.monotonic() + budget_s
    for side in sides:
        await side.round(measure=False)
    for _ in range(rounds):
        for side in sides:
            server0 = cpu_seconds(server_pid)
            await side.round()
            side.side.add("target server", cpu_seconds(server_pid) - server0)
        if time.monotonic() > deadline:
            break


def _wait_ready(port: int, request: bytes, proc: subprocess.Popen | None = None, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                c.sendall(request)
                c.settimeout(0.5)
                if c.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:  # refused (not listening yet) or timed out
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered {request.split(b' ')[1].decode()} on 127.0.0.1:{port} in {deadline_s}s")


def report(sides: list[Side], n: int, concurrency: int) -> None:
    *ours, ref = sides
    print(f"{n} loopback targets (paths of one asyncio HTTP server), concurrency {concurrency}, {len(ref.rates)} "
          "rounds per side interleaved (median probes/s; CPU: user + system of the prober's process)")
    width = max(len(x.name) for x in sides) + 2
    print(f"{'':26}" + "".join(f"{x.name:>{width}}" for x in sides)
          + "".join(f"{'ratio ' + x.name.split(',')[0] + ('*' if ',' in x.name else ''):>{width}}" for x in ours))
    print(f"{'probes/s':26}" + "".join(f"{x.rate:>{width}.0f}" for x in sides)
          + "".join(f"{x.rate / ref.rate:>{width - 1}.2f}x" for x in ours))
    print(f"{'CPU ms per probe':26}" + "".join(f"{x.per_probe_ms(x.cpu):>{width}.3f}" for x in sides)
          + "".join(f"{ref.per_probe_ms(ref.cpu) / x.per_probe_ms(x.cpu):>{width - 1}.2f}x" for x in ours))
    for x in sides:
        print(f"  {x.name}: " + "; ".join(f"{what} {x.per_probe_ms(sec):.3f}" for what, sec in x.extra.items())
              + " (CPU ms per probe)")
    print(f"ratio: ours vs {ref.name}, above 1x ours is better (probes/s ours/reference, CPU per probe "
          "reference/ours); * = a new connection per probe, as the reference probes")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=1000, choices=range(20, 5001), metavar="20..5000")
    ap.add_argument("--rounds", type=int, default=5, choices=range(1, 21), metavar="1..20")
    ap.add_argument("--concurrency", type=int, default=50, choices=range(1, 501), metavar="1..500")
    ap.add_argument("--budget", type=int, default=40, choices=range(5, 601), metavar="5..600",
                    help="seconds after which no further round starts (a loaded machine gets fewer rounds)")
    a = ap.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)  # listening before the child starts: early connects queue instead of being refused
    port = sock.getsockname()[1]
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(sock,), daemon=True)
    server.start()
    sides: list[Ours | Blackbox] = []
    try:
        _wait_ready(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with tempfile.TemporaryDirectory(prefix="bench-blackbox-") as tmp:
            reference = Blackbox(port, a.targets, a.concurrency, Path(tmp))
            sides = [Ours(port, a.targets, a.concurrency, keep_alive=True),
                     Ours(port, a.targets, a.concurrency, keep_alive=False), reference]
            try:
                _wait_ready(reference.port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n", reference.proc)

                async def run() -> None:
                    try:
                        await compare(sides, a.rounds, a.budget, server.pid)
                    finally:
                        for side in sides:
                            if isinstance(side, Ours):
                                await side.aclose()

                asyncio.run(run())
            finally:
                reference.stop()
    finally:
        server.terminate()
        server.join(10)
        sock.close()
    failed = {x.side.name: x.side.failed for x in sides if x.side.failed}
    assert not failed, f"probes failed on loopback: {failed}"
    report([x.side for x in sides], a.targets, a.concurrency)


if __name__ == "__main__":
    main()
