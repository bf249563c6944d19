"""A fake Kubernetes API on loopback for the agents' list+watch tests: mutual TLS like the real one, LIST with a
resourceVersion, WATCH streaming JSON lines over chunked HTTP/1.1, and the faults a real server shows (410 Gone,
dropped connections, compacted history) on demand."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from infra import pki


class FakeApi:
    """Collections by path; `add/modify/delete` change an object and notify watchers (`silently`: no event,
    as if a watch had missed it). `compact()` forgets the history so a resume gets 410 Gone;
    `drop_watches()` cuts every open watch without an end chunk."""

    def __init__(self, base: Path):
        ca = pki.create_root_ca("fake-api-ca")
        server = pki.issue_certificate(ca, "fake-api", ip_addresses=("127.0.0.1",))
        client = pki.issue_certificate(ca, "agent", server=False, client=True)
        for name, text in (("ca.crt", ca.cert_pem), ("server.crt", server.cert_pem), ("server.key", server.key_pem),
                           ("client.crt", client.cert_pem), ("client.key", client.key_pem)):
            (base / name).write_text(text)
        self.ca, self.cert, self.key = str(base / "ca.crt"), str(base / "client.crt"), str(base / "client.key")
        self.lock = threading.Lock()
        self.rv = 100
        self.objects: dict[str, dict[str, dict]] = {}  # path -> key -> object
        self.history: list[tuple[int, str, dict]] = []  # (rv, path, event)
        self.oldest = 0  # a watch from an older resourceVersion gets 410 Gone
        self.watchers: list[tuple[str, queue.Queue, socket.socket]] = []
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, query) of every GET
        self.fail_lists: set[str] = set()  # paths whose LIST answers 500
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.ca)
        tls.load_cert_chain(base / "server.crt", base / "server.key")
        tls.verify_mode = ssl.CERT_REQUIRED
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.server = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.drop_watches()
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- changes -------------------------------------------------------------------------------------------
    def _change(self, path: str, kind: str, obj: dict, silently: bool) -> dict:
        with self.lock:
            self.rv += 1
            obj = json.loads(json.dumps(obj))
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
            key = f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
            coll = self.objects.setdefault(path, {})
            if kind == "DELETED":
                coll.pop(key)
            else:
                coll[key] = obj
            if not silently:
                event = {"type": kind, "object": obj}
                self.history.append((self.rv, path, event))
                for p, q, _ in self.watchers:
                    if p == path:
                        q.put(event)
            return obj

    def add(self, path: str, obj: dict, silently: bool = False) -> dict:
        return self._change(path, "ADDED", obj, silently)

    def modify(self, path: str, obj: dict, silently: bool = False) -> dict:
        return self._change(path, "MODIFIED", obj, silently)

    def delete(self, path: str, obj: dict) -> dict:
        return self._change(path, "DELETED", obj, False)

    def bookmark(self, path: str) -> None:
        with self.lock:
            self.rv += 1
            for p, q, _ in self.watchers:
                if p == path:
                    q.put({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(self.rv)}}})

    def compact(self) -> None:
        with self.lock:
            self.history.clear()
            self.oldest = self.rv  # a watch from the current version has nothing to miss

    def drop_watches(self) -> None:
        with self.lock:
            watchers, self.watchers = self.watchers, []
        for _, q, sock in watchers:
            q.put(None)  # the handler stops writing
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def open_watches(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _, _ in self.watchers if p == path)

    def watches(self, path: str) -> list[dict[str, str]]:
        return [q for p, q in self.requests if p == path and q.get("watch") == "1"]

    def lists(self, path: str) -> int:
        return sum(1 for p, q in self.requests if p == path and q.get("watch") != "1")


def _handler(api: FakeApi):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, event: dict) -> None:
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            path = url.path
            api.requests.append((path, query))
            if query.get("watch") != "1":
                if path in api.fail_lists:
                    return self._json(500, {"kind": "Status", "code": 500, "message": "etcd is away"})
                with api.lock:
                    items = [api.objects.get(path, {})[k] for k in sorted(api.objects.get(path, {}))]
                    return self._json(200, {"metadata": {"resourceVersion": str(api.rv)}, "items": items})
            since = int(query["resourceVersion"])
            q: queue.Queue = queue.Queue()
            with api.lock:
                gone = since < api.oldest
                if not gone:
                    for rv, p, event in api.history:
                        if p == path and rv > since:
                            q.put(event)
                    api.watchers.append((path, q, self.connection))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if gone:  # what a real apiserver does: 200, then an ERROR event
                self._chunk({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                         "message": f"too old resource version: {since}"}})
            else:
                timeout = float(query.get("timeoutSeconds", "60"))
                try:
                    while True:
                        event = q.get(timeout=timeout)
                        if event is None:
                            return  # dropped: no end chunk
                        self._chunk(event)
                except queue.Empty:
                    pass
                except OSError:
                    return
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

    return Handler
