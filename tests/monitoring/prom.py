"""Real Prometheus and exporter processes for the end-to-end monitoring tests (loopback and lab)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import yaml

from monitoring import rulegen
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]


def get_json(url: str) -> dict:
    # No proxy: these URLs are loopback or lab addresses, never the Internet.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return json.loads(opener.open(url, timeout=3).read())


def wait_until(pred, deadline_s: float, what: str, every_s: float = 0.5):
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            last = pred()
            if last:
                return last
        except OSError as err:
            last = err
        time.sleep(every_s)
    raise AssertionError(f"{what} not within {deadline_s}s (last: {last})")


def query(prom: str, expr: str) -> list[dict]:
    return get_json(f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}")["data"]["result"]


def alerts(prom: str, **labels: str) -> list[dict]:
    """Active alerts (pending and firing) carrying all of `labels`."""
    found = get_json(f"{prom}/api/v1/alerts")["data"]["alerts"]
    return [a for a in found if all(a["labels"].get(k) == v for k, v in labels.items())]


def evaluated_since(prom: str, since: float) -> bool:
    """Every rule group of Prometheus has been evaluated at or after `since` (epoch seconds)."""
    groups = get_json(f"{prom}/api/v1/rules")["data"]["groups"]
    # lastEvaluation is RFC 3339 with nanoseconds; Python's parser takes microseconds at most.
    stamps = [re.sub(r"(\.\d{6})\d*", r"\1", g["lastEvaluation"]).replace("Z", "+00:00") for g in groups]
    return bool(groups) and all(datetime.fromisoformat(t).timestamp() >= since for t in stamps)


def firing(prom: str, **labels: str) -> set[str]:
    return {a["labels"]["alertname"] for a in alerts(prom, **labels) if a["state"] == "firing"}


def start(cmd: list[str], log: Path, netns_pid: int | None = None, env: dict | None = None) -> subprocess.Popen:
    """A process group of its own (stop() ends all of it); with netns_pid, inside that network namespace."""
    if netns_pid is not None:
        cmd = ["nsenter", "-t", str(netns_pid), "-n", *cmd]
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=ROOT, env={**os.environ, **(env or {})})


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_exporter(kind: str, cfg: dict, listen: str, workdir: Path, name: str | None = None,
                   **kw) -> subprocess.Popen:
    name = name or kind
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return start([sys.executable, "-m", "monitoring.exporters", kind, "--config", str(path), "--listen", listen],
                 workdir / f"{name}.log", **kw)


def start_prometheus(sites: list[dict], listen: str, workdir: Path, scale: float, interval: str = "1s",
                     **kw) -> subprocess.Popen:
    """Prometheus with the committed rules time-scaled by `scale` (rulegen), scraping and evaluating every
    `interval` (which is also the scrape timeout)."""
    rulegen.write(workdir, scale=scale)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(rulegen.prometheus_config(
        sites, scrape_interval=interval, evaluation_interval=interval)))
    return start([require_tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
                  f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={listen}"],
                 workdir / "prometheus.log", **kw)
