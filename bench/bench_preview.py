"""How `pulumi preview` of a stack grows with its size: 1, 3 and 10 sites, measured side by side.

Each site: 3 control-plane nodes over 3 racks, 2 workers, a gateway and a cluster; sites in a ring of
encrypted links. Real engine, real program, local file backend.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from infra.automation import stack


def cloud(n_sites: int) -> dict:
    sites, clusters = [], []
    for i in range(n_sites):
        nodes = [{"name": f"s{i}-cp{j}", "role": "control-plane", "rack": f"r{j}"} for j in range(3)]
        nodes += [{"name": f"s{i}-w{j}", "role": "worker", "rack": f"r{j}"} for j in range(2)]
        nodes.append({"name": f"s{i}-gw", "role": "gateway", "rack": "r2"})
        sites.append({"name": f"dc-{i}", "city": f"City {i}", "country": "KZ", "racks": ["r0", "r1", "r2"],
                      "subnet": f"10.{i}.0.0/24", "nodes": nodes})
        clusters.append({"name": f"k{i}", "site": f"dc-{i}", "kubernetes_version": "1.33.13",
                         "pod_cidr": f"10.{100 + i}.0.0/16", "service_cidr": f"10.{150 + i}.0.0/16"})
    links = [{"a": f"dc-{i}", "b": f"dc-{(i + 1) % n_sites}"} for i in range(n_sites)] if n_sites > 1 else []
    return {"sites": sites, "clusters": clusters, "transport": {"address_plan": "10.250.0.0/16", "links": links}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            st = stack(f"bench{n}", cloud(n), work_dir=Path(tmp) / f"ws{n}", backend=Path(tmp) / "state")
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                result = st.preview()
                best = min(best, time.perf_counter() - t0)
            results[n] = (best, sum(result.change_summary.values()))
    base = results[args.sizes[0]][0]
    print(f"{'sites':>5} {'resources':>9} {'preview s':>9} {'vs ' + str(args.sizes[0]) + ' site':>10}")
    for n, (seconds, resources) in results.items():
        print(f"{n:>5} {resources:>9} {seconds:>9.2f} {seconds / base:>9.2f}x")


if __name__ == "__main__":
    main()
