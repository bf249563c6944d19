"""The smallest Kubernetes API client the node agents need: list objects over mutual TLS, and a polling loop.

Standard library only: the agents run on the nodes' plain Debian python3 (no kubernetes/PyYAML packages).
"""

from __future__ import annotations

import argparse
import json
import logging
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sovcloud-agent")


class Client:
    """Authenticates with a client certificate (the agent's own identity) and trusts only `ca`."""

    def __init__(self, server: str, ca: str, cert: str, key: str, timeout_s: float = 10):
        if not server.startswith("https://"):
            raise ValueError(f"--server {server!r}: the API is only spoken to over https://")
        self.server = server.rstrip("/")
        self.timeout_s = timeout_s
        self.tls = ssl.create_default_context(cafile=ca)
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls.load_cert_chain(cert, key)

    def get(self, path: str, **params: str) -> dict[str, Any]:
        url = self.server + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, context=self.tls, timeout=self.timeout_s) as r:  # noqa: S310 (https only)
            return json.load(r)

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        """Every object of a list, following `continue` tokens."""
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.get(path, limit="500", **params, **({"continue": token} if token else {}))
            out += page.get("items") or []
            token = page.get("metadata", {}).get("continue", "")
            if not token:
                return out


def arguments(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--server", required=True, help="API endpoint, e.g. https://10.0.0.2:6443 (the site's LB)")
    p.add_argument("--ca", required=True, help="CA bundle the API's serving certificate chains to")
    p.add_argument("--cert", required=True, help="the agent's client certificate")
    p.add_argument("--key", required=True, help="its private key")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between syncs")
    p.add_argument("--once", action="store_true", help="sync once and exit (non-zero on failure)")
    return p


def poll(sync: Callable[[], bool], interval_s: float, once: bool = False) -> int:
    """Call `sync` (True when it changed something) every `interval_s`. A failed sync keeps what was
    applied last: the API being away must not open (or close) the data path."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    failing = False
    while True:
        try:
            if sync():
                log.info("applied a new configuration")
            if failing:
                log.info("in sync again")
            failing = False
        except (OSError, ValueError, RuntimeError) as e:  # urllib's URLError/HTTPError are OSErrors
            if once:
                log.error("sync failed: %s", e)
                return 1
            if not failing:  # log a failure once, not every interval
                log.warning("sync failed, keeping the last applied configuration: %s", e)
            failing = True
        if once:
            return 0
        time.sleep(interval_s)
