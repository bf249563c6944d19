"""NetworkPolicy agent at scale, two parts side by side in one run:

- render: what one sync costs a worker (render the nftables script from the API's lists, and load it with
  `nft -f`) for a large cluster vs a small one. The script is loaded into a throw-away network namespace
  (`unshare -n`), so nothing on this machine changes.
- api: the agent against a real kube-apiserver + etcd on loopback (lab/loopback_apiserver.py) holding
  --pods pods and --policies NetworkPolicies, first in `--mode poll` (the reference: every collection listed
  every 2 s), then in `--mode watch` (list once, then watch). For each: the agent's API requests per minute
  (counted by the apiserver's audit log) and policy-change-to-enforced latency p50/p99 over --changes changes
  (a policy patched, until the rules the agent renders contain it; nothing is loaded into nftables).

    .venv/bin/python -m bench.bench_netpol [--part render|api|all] [--tenants 200] [--pods-per-tenant 10]
        [--rounds 5] [--pods 2000] [--policies 1000] [--changes 40]

Each tenant is one namespace with the tenant chart's six policies (default deny, DNS, Internet gateway,
gateway in, monitoring in, same namespace); pods are spread over 4 workers and the agent works for one of
them. Bounded by --tenants (<= 2000) x --pods-per-tenant (<= 50) x --rounds (<= 20), and --pods (<= 5000),
--policies (<= 3000) x --changes (<= 100), each change given at most 30 s.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agents import kubeapi
from agents.netpol import COLLECTIONS, Enforcer, render
from lab.loopback_apiserver import LoopbackApiserver

WORKERS = 4


def _policies(ns: str) -> list[dict]:
    def pol(name: str, types: list[str], **spec) -> dict:
        return {"metadata": {"name": name, "namespace": ns},
                "spec": {"podSelector": {}, "policyTypes": types, **spec}}

    def ns_sel(name: str) -> dict:
        return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}

    return [
        pol("default-deny-all", ["Ingress", "Egress"]),
        pol("allow-egress-dns", ["Egress"], egress=[{"to": [{**ns_sel("kube-system"), "podSelector": {
            "matchLabels": {"k8s-app": "kube-dns"}}}], "ports": [{"protocol": "UDP", "port": 53},
                                                               {"protocol": "TCP", "port": 53}]}]),
        pol("allow-egress-internet-gateway", ["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "10.210.1.15/32"}}],
                                                                  "ports": [{"protocol": "TCP", "port": 3128}]}]),
        pol("allow-ingress-from-gateway", ["Ingress"], ingress=[{"from": [{"ipBlock": {"cidr": "10.210.1.15/32"}}]}]),
        pol("allow-ingress-from-monitoring", ["Ingress"], ingress=[{"from": [ns_sel("monitoring")]}]),
        pol("allow-same-namespace", ["Ingress", "Egress"], ingress=[{"from": [{"podSelector": {}}]}],
            egress=[{"to": [{"podSelector": {}}]}]),
    ]


def cluster(tenants: int, per_tenant: int) -> tuple[list[dict], list[dict], list[dict]]:
    pods, namespaces, policies = [], [], []
    for t in range(tenants):
        ns = f"agency{t}-prod"
        namespaces.append({"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}})
        policies += _policies(ns)
        for i in range(per_tenant):
            n = t * per_tenant + i
            ip = f"10.{64 + n // 65536}.{n // 256 % 256}.{n % 256}"
            pods.append({"metadata": {"name": f"web-{i}", "namespace": ns, "labels": {"app": "web"}},
                         "spec": {"nodeName": f"w{n % WORKERS}", "containers": [{"name": "web"}]},
                         "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
    return pods, namespaces, policies


def measure(tenants: int, per_tenant: int, rounds: int) -> dict[str, float]:
    pods, namespaces, policies = cluster(tenants, per_tenant)
    render_s, load_s = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        script = render("w0", pods, namespaces, policies)
        render_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(["unshare", "-n", "nft", "-f", "-"], input=script, text=True, check=True)
        load_s.append(time.perf_counter() - t0)
    return {"pods": len(pods), "policies": len(policies), "rules": script.count("\n"),
            "render_ms": statistics.median(render_s) * 1000, "load_ms": statistics.median(load_s) * 1000}


CHANGE_TIMEOUT_S = 30
TARGET_REQUESTS = 0.1  # the watch agent's requests per minute against the polling one's
AGENT = "netpol-{mode}"  # one identity per mode: the audit log tells their requests apart


class _Rules:
    """The agent's `load`: keeps the rendered script and wakes whoever waits for a marker in it."""

    def __init__(self):
        self.cond = threading.Condition()
        self.script = ""
        self.loads = 0

    def load(self, script: str) -> None:
        with self.cond:
            self.script, self.loads = script, self.loads + 1
            self.cond.notify_all()

    def wait_for(self, text: str, timeout_s: float) -> float:
        """The time.monotonic() at which a loaded script first contained `text`."""
        with self.cond:
            if not self.cond.wait_for(lambda: text in self.script, timeout_s):
                raise TimeoutError(f"the agent's rules did not contain {text!r} after {timeout_s} s")
            return time.monotonic()


def populate(api: LoopbackApiserver, pods: int, policies: int) -> None:
    """The cluster of the render part, cut to `pods` pods and `policies` policies, written to the API."""
    tenants = math.ceil(policies / 6)
    all_pods, namespaces, all_policies = cluster(tenants, math.ceil(pods / tenants))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: api.call("POST", "/api/v1/namespaces", n),
                      [*namespaces, {"metadata": {"name": "monitoring"}}]))

        def pod(obj: dict) -> None:
            meta = obj["metadata"]
            body = {"metadata": meta, "spec": {**obj["spec"], "containers": [
                {"name": "web", "image": "registry.invalid/web:1"}]}}
            api.call("POST", f"/api/v1/namespaces/{meta['namespace']}/pods", body)
            # Created pods are Pending without an address: the status a kubelet would report.
            api.call("PATCH", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                     {"status": obj["status"]}, patch=True)

        list(pool.map(pod, all_pods[:pods]))
        list(pool.map(lambda p: api.call(
            "POST", f"/apis/networking.k8s.io/v1/namespaces/{p['metadata']['namespace']}/networkpolicies", p),
            all_policies[:policies]))


def measure_agent(api: LoopbackApiserver, mode: str, changes: int, first_marker: int,
                  seed: int) -> dict[str, float]:
    """Runs the agent in `mode` until `changes` policy changes were each seen in its rules."""
    user = AGENT.format(mode=mode)
    cert, key = api.identity(user)
    args = kubeapi.arguments("bench").parse_args(
        ["--server", api.server, "--ca", str(api.ca), "--cert", str(cert), "--key", str(key), "--mode", mode])
    rules = _Rules()
    enforcer = Enforcer("w0", load=rules.load)
    sync_s: list[float] = []

    def timed_sync(api) -> bool:  # the profile: how much of a change's latency is the sync itself
        t = time.perf_counter()
        try:
            return enforcer.sync(api)
        finally:
            sync_s.append(time.perf_counter() - t)

    stop = threading.Event()
    t_start = time.monotonic()
    agent = threading.Thread(target=kubeapi.serve, args=(timed_sync, kubeapi.Client(
        api.server, str(api.ca), str(cert), str(key)), COLLECTIONS, args, stop), daemon=True)
    agent.start()
    rng = random.Random(seed)
    namespaces = sorted({n for n in (p["metadata"]["namespace"] for p in api.call(
        "GET", "/apis/networking.k8s.io/v1/networkpolicies")["items"]) if n.startswith("agency")})
    latencies = []
    try:
        with rules.cond:
            if not rules.cond.wait_for(lambda: rules.loads > 0, 120):
                raise TimeoutError(f"{mode}: the agent rendered nothing in 120 s")
        t_ready = time.monotonic()
        before = _count(api, user)
        for i in range(changes):
            # At a random moment of the poll cycle, so poll latencies sample all of it.
            stop.wait(rng.uniform(0, args.interval))
            n = first_marker + i
            cidr = f"10.211.{n // 256}.{n % 256}/32"
            ns = rng.choice(namespaces)
            t0 = time.monotonic()
            api.call("PATCH", f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/"
                     "allow-ingress-from-gateway",
                     {"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]}}, patch=True)
            latencies.append(rules.wait_for(f"ip saddr {cidr} ", CHANGE_TIMEOUT_S) - t0)
        t_end = time.monotonic()
        steady = _count(api, user) - before
    finally:
        stop.set()
        agent.join(timeout=30)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {"startup_s": t_ready - t_start, "startup_requests": before,
            "per_min": steady / ((t_end - t_ready) / 60), "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": q[98] * 1000, "max_ms": max(latencies) * 1000, "minutes": (t_end - t_ready) / 60,
            "sync_ms": statistics.median(sync_s) * 1000, "resync_min": args.resync / 60}


def _count(api: LoopbackApiserver, user: str) -> int:
    return sum(n for (who, _, _), n in api.requests().items() if who == user)


def api_part(pods: int, policies: int, changes: int) -> None:
    logging.basicConfig(level=logging.WARNING)  # the agents' own INFO lines (each load) would drown the table
    with tempfile.TemporaryDirectory(prefix="bench-netpol-") as tmp, \
            LoopbackApiserver(Path(tmp) / "api", audited=tuple(AGENT.format(mode=m) for m in ("poll", "watch"))) \
            as api:
        t0 = time.monotonic()
        populate(api, pods, policies)
        print(f"api: {pods} pods, {policies} policies written in {time.monotonic() - t0:.0f} s; "
              f"agent for worker w0, {changes} policy changes per mode", flush=True)
        results = {mode: measure_agent(api, mode, changes, i * changes, seed=i)
                   for i, mode in enumerate(("poll", "watch"))}
    poll, watch = results["poll"], results["watch"]
    # A watch lasts until the next resync, which lists everything again and opens new watches: the watch
    # mode's start (lists + watches) once per --resync is its long-run rate, whatever the window measured.
    watch["long_run"] = watch["per_min"] + watch["startup_requests"] / watch["resync_min"]
    poll["long_run"] = poll["per_min"]
    print(f"{'mode':>8} {'start s':>8} {'start req':>9} {'req/min':>8} {'+resyncs':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'sync ms':>7}")
    for mode, r in results.items():
        print(f"{mode:>8} {r['startup_s']:>8.1f} {r['startup_requests']:>9} {r['per_min']:>8.1f} "
              f"{r['long_run']:>8.1f} {r['p50_ms']:>7.0f} {r['p99_ms']:>7.0f} {r['max_ms']:>7.0f} {r['sync_ms']:>7.0f}")
    ratio = {k: watch[k] / poll[k] for k in ("long_run", "p50_ms", "p99_ms")}
    print(f"ratio watch/poll (reference: --mode poll): requests/min x{ratio['long_run']:.3f} (resyncs included), "
          f"latency p50 x{ratio['p50_ms']:.2f}, p99 x{ratio['p99_ms']:.2f}; measured over {poll['minutes']:.1f} "
          f"and {watch['minutes']:.1f} min after the first sync")
    met = ratio["long_run"] <= TARGET_REQUESTS and watch["p50_ms"] < poll["p50_ms"] and watch["p99_ms"] < poll["p99_ms"]
    print(f"targets (requests/min <= x{TARGET_REQUESTS} of poll's, p50 and p99 below poll's): "
          f"{'met' if met else 'NOT met'}; the watch's latency is a 0.1 s settle plus one sync ('sync ms': "
          "rendering every pod and policy of the cluster for this worker)")


def render_part(tenants: int, per_tenant: int, rounds: int) -> None:
    small = measure(max(1, tenants // 20), per_tenant, rounds)
    large = measure(tenants, per_tenant, rounds)
    print(f"{'cluster':>8} {'pods':>6} {'policies':>8} {'lines':>7} {'render ms':>10} {'nft -f ms':>10}")
    for name, r in (("small", small), ("large", large)):
        print(f"{name:>8} {r['pods']:>6} {r['policies']:>8} {r['rules']:>7} {r['render_ms']:>10.1f} "
              f"{r['load_ms']:>10.1f}")
    ratio = {k: large[k] / small[k] for k in ("pods", "render_ms", "load_ms")}
    print(f"ratio large/small: pods x{ratio['pods']:.0f}, render x{ratio['render_ms']:.1f}, "
          f"nft load x{ratio['load_ms']:.1f} (median of {rounds} rounds, one worker's view)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("render", "api", "all"), default="all")
    p.add_argument("--tenants", type=int, default=200)
    p.add_argument("--pods-per-tenant", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pods", type=int, default=2000)
    p.add_argument("--policies", type=int, default=1000)
    p.add_argument("--changes", type=int, default=40)
    a = p.parse_args()
    if not (1 <= a.tenants <= 2000 and 1 <= a.pods_per_tenant <= 50 and 1 <= a.rounds <= 20):
        p.error("bounds: --tenants 1..2000, --pods-per-tenant 1..50, --rounds 1..20")
    if not (1 <= a.pods <= 5000 and 6 <= a.policies <= 3000 and 2 <= a.changes <= 100):
        p.error("bounds: --pods 1..5000, --policies 6..3000, --changes 2..100")
    if a.part in ("render", "all"):
        render_part(a.tenants, a.pods_per_tenant, a.rounds)
    if a.part in ("api", "all"):
        api_part(a.pods, a.policies, a.changes)


if __name__ == "__main__":
    main()
