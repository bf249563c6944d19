"""The smallest Kubernetes API client the node agents need: list and watch objects over mutual TLS, and the
agents' loop.

Standard library only: the agents run on the nodes' plain Debian python3 (no kubernetes/PyYAML packages).

Two modes (`--mode`):
- watch (the default): per collection, an informer LISTs once and then WATCHes from the list's
  resourceVersion, keeping a local copy current; an event wakes the agent at once (a burst of events settles
  into one sync). A watch the server ends is resumed from the last resourceVersion seen (bookmarks keep it
  fresh); "410 Gone" (the server no longer has that version) relists; a dropped connection reconnects with
  backoff; a full relist every `--resync` seconds heals anything a watch could have missed. The API's load
  no longer grows with how often the agent looks, and a change is enforced when it happens, not at the next
  poll.
- poll: list every collection every `--interval` seconds (the agents' first loop; the reference the
  benchmark `python -m bench.bench_netpol` compares against, and a fallback where streaming is broken).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("sovcloud-agent")

# What a sync may raise and still keep the last applied configuration (urllib's errors are OSErrors).
SYNC_ERRORS = (OSError, ValueError, RuntimeError, http.client.HTTPException)
# client-go's spread: watches end at random times, so many agents do not relist or rewatch in step.
WATCH_S = (300.0, 600.0)
# A quiet collection's watch may carry nothing until it ends: the read timeout is its length plus this. A peer
# that vanished without closing (a failed load balancer) is found sooner by TCP keepalive (KEEPALIVE_S).
WATCH_GRACE_S = 30.0
KEEPALIVE_S = (30, 10, 3)  # idle seconds before the first probe, seconds between probes, probes
BACKOFF_S = (0.5, 30.0)  # reconnect backoff: first and largest delay


class ApiError(OSError):
    """The API answered with an error status (or a watch ERROR event)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Gone(ApiError):
    """410: the resourceVersion asked for is no longer in the server's history; list again."""


class Client:
    """Authenticates with a client certificate (the agent's own identity) and trusts only `ca`."""

    def __init__(self, server: str, ca: str, cert: str, key: str, timeout_s: float = 10):
        if not server.startswith("https://"):
            raise ValueError(f"--server {server!r}: the API is only spoken to over https://")
        self.server = server.rstrip("/")
        url = urllib.parse.urlsplit(self.server)
        self.host, self.port, self.prefix = url.hostname or "", url.port or 443, url.path
        self.timeout_s = timeout_s
        self.tls = ssl.create_default_context(cafile=ca)
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls.load_cert_chain(cert, key)

    def get(self, path: str, **params: str) -> dict[str, Any]:
        url = self.server + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, context=self.tls, timeout=self.timeout_s) as r:  # noqa: S310 (https)
                return json.load(r)
        except urllib.error.HTTPError as e:
            status = _status_message(e.read())
            raise (Gone if e.code == 410 else ApiError)(e.code, status or str(e.reason)) from None

    def list(self, path: str, **params: str) -> tuple[list[dict[str, Any]], str]:
        """Every object of a collection, following `continue` tokens, and the list's resourceVersion (the
        version a watch starts from)."""
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.get(path, limit="500", **params, **({"continue": token} if token else {}))
            out += page.get("items") or []
            meta = page.get("metadata", {})
            token = meta.get("continue", "")
            if not token:
                return out, meta.get("resourceVersion", "")

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        """Every object of a collection (what a sync reads: the same call on a `Watched` cache)."""
        return self.list(path, **params)[0]

    def watch(self, path: str, resource_version: str, timeout_s: float, **params: str) -> Watch:
        """The events of a collection after `resource_version`; the server ends the stream after `timeout_s`."""
        query = urllib.parse.urlencode({**params, "watch": "1", "resourceVersion": resource_version,
                                        "allowWatchBookmarks": "true", "timeoutSeconds": str(int(timeout_s))})
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.tls,
                                           timeout=self.timeout_s)
        try:
            conn.request("GET", f"{self.prefix}{path}?{query}", headers={"Accept": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                message = _status_message(resp.read()) or resp.reason
                raise (Gone if resp.status == 410 else ApiError)(resp.status, message)
            _keepalive(conn.sock)
            conn.sock.settimeout(timeout_s + WATCH_GRACE_S)  # the server ends the watch before this
        except BaseException:
            conn.close()
            raise
        return Watch(conn, resp)


def _keepalive(sock: socket.socket) -> None:
    idle, interval, count = KEEPALIVE_S
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        if hasattr(socket, name):  # Linux (the nodes); elsewhere the system's defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _status_message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


class Watch:
    """One watch response: iterate its events; interrupt() (from another thread) ends the iteration."""

    def __init__(self, conn: http.client.HTTPSConnection, resp: http.client.HTTPResponse):
        self.conn, self.resp = conn, resp

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for line in self.resp:
            if line.strip():
                yield json.loads(line)

    def interrupt(self) -> None:
        # Only the socket: the reading thread closes the connection itself (http.client is not thread-safe).
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta['name']}"


class Informer:
    """One collection kept current by list+watch; `items()` is its objects as of the last event.

    `on_change` is called (from the informer's thread) when the copy changed: an event, or a relist that
    found something different."""

    def __init__(self, client: Client, path: str, params: dict[str, str], on_change: Callable[[], None],
                 resync_s: float, stop: threading.Event):
        self.client, self.path, self.params = client, path, params
        self.on_change, self.resync_s, self.stop = on_change, resync_s, stop
        self.synced = threading.Event()  # set by the first complete list
        self._objects: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._watch: Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)
        self.lists = 0  # how many times it listed (the first list, 410 Gone, resyncs, errors)
        # The resourceVersion its next watch resumes from; None: it lists first (at start, after 410 Gone or an
        # error; a resync lists too).
        self.version: str | None = None

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._objects.values())

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Ends a watch in progress (the caller has set `stop`) and waits for the thread."""
        w = self._watch
        if w is not None:
            w.interrupt()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _replace(self, items: list[dict[str, Any]]) -> None:
        fresh = {_key(o): o for o in items}
        with self._lock:
            changed = _versions(fresh) != _versions(self._objects)
            self._objects = fresh
        self.lists += 1
        if changed or not self.synced.is_set():
            self.synced.set()
            self.on_change()

    def _apply(self, event: dict[str, Any]) -> str | None:
        """Applies one watch event; the resourceVersion to resume from."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            code = int(obj.get("code") or 500)
            raise (Gone if code == 410 else ApiError)(code, str(obj.get("message", "")))
        version = obj["metadata"]["resourceVersion"]
        if kind in ("ADDED", "MODIFIED"):
            with self._lock:
                self._objects[_key(obj)] = obj
        elif kind == "DELETED":
            with self._lock:
                self._objects.pop(_key(obj), None)
        elif kind != "BOOKMARK":
            raise ValueError(f"unknown watch event type {kind!r}")
        if kind != "BOOKMARK":
            self.on_change()
        return version

    def _recovered(self, failures: int) -> int:
        if failures:
            log.info("watch %s: in sync again", self.path)
        return 0

    def _run(self) -> None:
        resync_at = 0.0
        failures = 0
        while not self.stop.is_set():
            started = time.monotonic()
            listed = False
            try:
                if self.version is None or started >= resync_at:
                    listed = True
                    items, self.version = self.client.list(self.path, **self.params)
                    self._replace(items)
                    resync_at = time.monotonic() + self.resync_s
                # The watch ends by itself at the next resync, so a relist never cuts a stream short.
                timeout = max(1.0, min(random.uniform(*WATCH_S), resync_at - time.monotonic()))
                with self.client.watch(self.path, self.version, timeout, **self.params) as w:
                    self._watch = w
                    if self.stop.is_set():
                        break
                    for event in w:
                        self.version = self._apply(event) or self.version
                        failures = self._recovered(failures)
                    failures = self._recovered(failures)  # the server ended the watch on time
                if time.monotonic() - started < 1.0:  # a server ending watches at once: do not spin
                    self.stop.wait(1.0)
            except Gone as e:
                log.info("watch %s: %s; listing again", self.path, e)
                self.version = None
                if listed:  # gone straight after a list: the server is not keeping up, do not hammer it
                    failures += 1
                    self.stop.wait(_backoff(failures))
            except (*SYNC_ERRORS, KeyError, TypeError) as e:
                if self.stop.is_set():
                    break
                if not failures:  # once per outage, not every retry
                    log.warning("watch %s failed, retrying with backoff (the last objects stay): %s",
                                self.path, e)
                failures += 1
                if isinstance(e, (ValueError, KeyError, TypeError, ApiError)):
                    self.version = None  # a garbled stream or an error status: start again from a list
                self.stop.wait(_backoff(failures))
            finally:
                self._watch = None


def _backoff(failures: int) -> float:
    first, most = BACKOFF_S
    return min(most, first * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)


def _versions(objects: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {k: o.get("metadata", {}).get("resourceVersion", "") for k, o in objects.items()}


class Watched:
    """The collections an agent reads, each kept by an informer; `items(path, **params)` reads the local copy,
    as `Client.items` reads the API."""

    def __init__(self, client: Client, collections: list[tuple[str, dict[str, str]]],
                 on_change: Callable[[], None], resync_s: float, stop: threading.Event):
        self.informers = {(path, _frozen(params)): Informer(client, path, params, on_change, resync_s, stop)
                          for path, params in collections}

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        informer = self.informers.get((path, _frozen(params)))
        if informer is None:
            raise ValueError(f"{path} {params or ''} is not one of the watched collections: add it to the "
                             "agent's COLLECTIONS")
        return informer.items()

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values())

    def start(self) -> None:
        for i in self.informers.values():
            i.start()

    def close(self) -> None:
        for i in self.informers.values():
            i.close()


def _frozen(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(params.items()))


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds above 0")
    return value


def arguments(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--server", required=True, help="API endpoint, e.g. https://10.0.0.2:6443 (the site's LB)")
    p.add_argument("--ca", required=True, help="CA bundle the API's serving certificate chains to")
    p.add_argument("--cert", required=True, help="the agent's client certificate")
    p.add_argument("--key", required=True, help="its private key")
    p.add_argument("--mode", choices=("watch", "poll"), default="watch",
                   help="watch: list once, then follow the API's changes (default); poll: list every --interval")
    p.add_argument("--interval", type=_positive, default=2.0,
                   help="poll: seconds between syncs; watch: seconds before a failed sync is tried again")
    p.add_argument("--resync", type=_positive, default=300.0,
                   help="watch: seconds between full relists and syncs that heal anything a watch missed")
    p.add_argument("--once", action="store_true", help="sync once and exit (non-zero on failure)")
    return p


Sync = Callable[[Any], bool]  # reads collections through `.items(path, **params)`; True if it applied something


def serve(sync: Sync, client: Client, collections: list[tuple[str, dict[str, str]]], a: argparse.Namespace,
          stop: threading.Event | None = None) -> int:
    """The agent's loop in the mode `a` asks for (`arguments`); returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if a.once or a.mode == "poll":
        return poll(lambda: sync(client), a.interval, a.once, stop)
    return watch(sync, client, collections, resync_s=a.resync, retry_s=a.interval, stop=stop)


class _Outcome:
    """Logs a failing sync once per outage; a failed sync keeps what was applied last: the API being away
    must not open (or close) the data path."""

    def __init__(self):
        self.failing = False

    def run(self, sync: Callable[[], bool]) -> bool:
        try:
            if sync():
                log.info("applied a new configuration")
        except SYNC_ERRORS as e:
            if not self.failing:
                log.warning("sync failed, keeping the last applied configuration: %s", e)
            self.failing = True
            return False
        if self.failing:
            log.info("in sync again")
        self.failing = False
        return True


def poll(sync: Callable[[], bool], interval_s: float, once: bool = False,
         stop: threading.Event | None = None) -> int:
    """Call `sync` (True when it changed something) every `interval_s` until `stop` is set."""
    stop = stop or threading.Event()
    outcome = _Outcome()
    while True:
        if once:
            try:
                sync()
            except SYNC_ERRORS as e:
                log.error("sync failed: %s", e)
                return 1
            return 0
        outcome.run(sync)
        if stop.wait(interval_s):
            return 0


def watch(sync: Sync, client: Client, collections: list[tuple[str, dict[str, str]]], resync_s: float,
          retry_s: float, stop: threading.Event | None = None, settle_s: float = 0.1,
          most_s: float = 1.0) -> int:
    """Call `sync(cache)` once every collection is listed, then whenever one changes, until `stop` is set.

    A burst of events is one sync: the sync starts once `settle_s` passes without an event, or `most_s` after
    the first. Nothing is synced before every collection was listed once (an empty copy is not an empty
    cluster). A failed sync is tried again after `retry_s`; every `resync_s` a sync runs anyway (time-based
    work of a sync, e.g. the gateway's certificate checks)."""
    stop = stop or threading.Event()
    dirty = threading.Event()
    cache = Watched(client, collections, dirty.set, resync_s, stop)
    outcome = _Outcome()
    cache.start()
    try:
        due = time.monotonic() + resync_s
        while not stop.is_set():
            # In slices: `stop` is seen within a second even without an event.
            if not dirty.wait(min(1.0, max(0.0, due - time.monotonic()))) and time.monotonic() < due:
                continue
            if stop.is_set():
                break
            if not cache.synced():
                # Nothing to do until every collection has listed (its list sets `dirty`); the resync is
                # due from then. Without moving `due`, a list failing past it would never wait again.
                dirty.clear()
                due = time.monotonic() + resync_s
                continue
            first = time.monotonic()
            while True:
                dirty.clear()
                if stop.wait(settle_s) or not dirty.is_set() or time.monotonic() - first >= most_s:
                    break
            dirty.clear()  # events from here on make another sync
            ok = outcome.run(lambda: sync(cache))
            due = time.monotonic() + (resync_s if ok else retry_s)
    finally:
        stop.set()
        cache.close()
    return 0
