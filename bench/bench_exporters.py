"""Availability prober at scale: one probe round (= what one scrape interval costs) over 1,000 targets
vs 10 targets, side by side in one run, against one asyncio HTTP server on loopback serving every path.

    .venv/bin/python -m bench.bench_exporters [--targets 1000] [--rounds 5]

The server runs in its own process so it does not share the prober's event loop. Bounded by
--targets (<= 5000) x --rounds (<= 20), each probe by its 10 s timeout; stops the server at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import time

from prometheus_client import generate_latest

from monitoring.exporters import config
from monitoring.exporters.prober import Prober

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"


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


def prober(port: int, n: int, concurrency: int) -> Prober:
    return Prober(config.parse("prober", {
        "source_site": "dc-bench", "interval_seconds": 30, "timeout_seconds": 10, "concurrency": concurrency,
        "targets": [{"site": f"site-{i:04d}", "service": "gateway", "url": f"http://127.0.0.1:{port}/t/{i}"}
                    for i in range(n)]}))


async def measure(port: int, n: int, rounds: int, concurrency: int) -> tuple[float, float, int]:
    """(median round seconds, median /metrics render seconds, failed probes)."""
    p = prober(port, n, concurrency)
    try:
        await p.run_round()  # warm-up: opens the pooled connections
        times, renders, failed = [], [], 0
        for _ in range(rounds):
            r = await p.run_round()
            times.append(r.seconds)
            failed += r.failed
            t = time.perf_counter()
            generate_latest(p.registry)
            renders.append(time.perf_counter() - t)
        return statistics.median(times), statistics.median(renders), failed
    finally:
        await p.aclose()


def _wait_ready(port: int, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            c.settimeout(0.5)
            try:
                if c.recv(64).startswith(b"HTTP/1.1 200"):
                    return
            except TimeoutError:
                pass
    raise RuntimeError("bench HTTP server did not answer")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=1000, choices=range(20, 5001), metavar="20..5000")
    ap.add_argument("--rounds", type=int, default=5, choices=range(1, 21), metavar="1..20")
    ap.add_argument("--concurrency", type=int, default=50, choices=range(1, 501), metavar="1..500")
    a = ap.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)  # listening before the child starts: early connects queue instead of being refused
    port = sock.getsockname()[1]
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(sock,), daemon=True)
    server.start()
    try:
        _wait_ready(port)
        small_t, small_r, small_f = asyncio.run(measure(port, 10, a.rounds, a.concurrency))
        big_t, big_r, big_f = asyncio.run(measure(port, a.targets, a.rounds, a.concurrency))
    finally:
        server.terminate()
        server.join(10)
        sock.close()
    assert small_f == big_f == 0, f"probes failed against the local server: {small_f}, {big_f}"
    print(f"prober, one asyncio HTTP server on loopback, concurrency {a.concurrency}, median of {a.rounds} rounds")
    print(f"{'targets':>8} {'round s':>9} {'probes/s':>10} {'/metrics render s':>18}")
    print(f"{10:>8} {small_t:>9.4f} {10 / small_t:>10.0f} {small_r:>18.4f}")
    print(f"{a.targets:>8} {big_t:>9.4f} {a.targets / big_t:>10.0f} {big_r:>18.4f}")
    print(f"ratio round wall time {a.targets} vs 10 targets: {big_t / small_t:.1f}x "
          f"(targets ratio {a.targets / 10:.0f}x); /metrics render ratio {big_r / small_r:.1f}x")


if __name__ == "__main__":
    main()
