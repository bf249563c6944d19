"""NetworkPolicy agent at scale: what one sync costs a worker (render the nftables script from the API's
lists, and load it with `nft -f`) for a large cluster vs a small one, side by side in one run.

    .venv/bin/python -m bench.bench_netpol [--tenants 200] [--pods-per-tenant 10] [--rounds 5]

Each tenant is one namespace with the tenant chart's six policies (default deny, DNS, Internet gateway,
gateway in, monitoring in, same namespace); pods are spread over 4 workers and the bench renders for one
of them. The script is loaded into a throw-away network namespace (`unshare -n`), so nothing on this
machine changes. Bounded by --tenants (<= 2000) x --pods-per-tenant (<= 50) x --rounds (<= 20).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from agents.netpol import render

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tenants", type=int, default=200)
    p.add_argument("--pods-per-tenant", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    if not (1 <= a.tenants <= 2000 and 1 <= a.pods_per_tenant <= 50 and 1 <= a.rounds <= 20):
        p.error("bounds: --tenants 1..2000, --pods-per-tenant 1..50, --rounds 1..20")
    small = measure(max(1, a.tenants // 20), a.pods_per_tenant, a.rounds)
    large = measure(a.tenants, a.pods_per_tenant, a.rounds)
    print(f"{'cluster':>8} {'pods':>6} {'policies':>8} {'lines':>7} {'render ms':>10} {'nft -f ms':>10}")
    for name, r in (("small", small), ("large", large)):
        print(f"{name:>8} {r['pods']:>6} {r['policies']:>8} {r['rules']:>7} {r['render_ms']:>10.1f} "
              f"{r['load_ms']:>10.1f}")
    ratio = {k: large[k] / small[k] for k in ("pods", "render_ms", "load_ms")}
    print(f"ratio large/small: pods x{ratio['pods']:.0f}, render x{ratio['render_ms']:.1f}, "
          f"nft load x{ratio['load_ms']:.1f} (median of {a.rounds} rounds, one worker's view)")


if __name__ == "__main__":
    main()
