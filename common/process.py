"""Stopping a child process: SIGTERM, a grace period to exit cleanly, then SIGKILL (servers started for tests,
benchmarks and the DR jobs' own etcd)."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen | None, grace_s: float = 10) -> None:
    """Stop `proc` if it still runs; return once it has exited."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
