"""Control-plane faults under load: a control-plane node of one lab site is stopped (an orderly `podman stop`:
systemd halts its services, given 60 s) or crashed (`podman kill -s KILL`: no shutdown at all) --rounds times
in a row, the etcd leader (found by asking etcd) in half the rounds and a follower in the others, while clients write
and read through the site's API load balancer, as any client of the cloud does.

    .venv/bin/python -m bench.bench_control_plane [--site dc-almaty] [--rounds 10] [--writers 2]
        [--fault-seconds 20]

Needs the default lab (`make lab`). Reported per round: the fault, the victim, whether it led, the time until
the surviving members agree on a leader (etcd's own status, polled every 0.2 s), the writes and reads done
meanwhile, and the time until the node is back in etcd (3/3 healthy) and in the LB. At the end every
acknowledged write is read back: a write is acknowledged when the API answered 201, or 409 AlreadyExists to a
retry of a create whose earlier attempt got no answer (the create went through; the client could not know).
A write is retried for up to 30 s on what an LB in front of failing apiservers answers (no answer, 5xx,
etcd's "leader changed"); one not acknowledged by then is failed. Exit 1 on a failed or lost write.

Bounded: --rounds <= 20, --fault-seconds <= 60, each node given 180 s to rejoin; the objects it writes
(ConfigMaps labelled sovcloud.bench/run=<id> in `default`) are deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

from common.wait import until
from lab import cluster, inventory
from lab.config import load
from lab.nodes import start_node, wait_booted, wait_ssh
from lab.podman import podman

NAMESPACE = "default"
# A control-plane node's orderly halt takes ~22 s (kube-apiserver drains first, up to its TimeoutStopSec=20, and
# etcd stops after it): podman's stop timeout must exceed it, or a "stop" is a crash at the timeout.
HALT_S = 60
RETRY_FOR_S = 30.0
LEADER_CHANGED = "etcdserver: leader changed"


def _kind(answer: httpx.Response | Exception) -> str:
    """A short name of what an attempt got back, to count and explain."""
    if not isinstance(answer, httpx.Response):
        return type(answer).__name__
    if LEADER_CHANGED in answer.text:
        return f"{answer.status_code} leader changed"
    try:
        return f"{answer.status_code} {answer.json().get('reason', '')}".strip()
    except ValueError:
        return str(answer.status_code)


@dataclass
class Traffic:
    """What the clients did, shared by their threads (each list append is atomic under the GIL)."""

    acked: list[str] = field(default_factory=list)
    failed_writes: list[str] = field(default_factory=list)
    write_retries: Counter = field(default_factory=Counter)
    reads: int = 0
    failed_reads: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


class Clients:
    """--writers threads creating ConfigMaps one after another, and one reader, through the LB."""

    def __init__(self, site, state_dir, run: str, writers: int):
        self.base = cluster.api_endpoint(site)
        self.verify = cluster.ssl_context(site, state_dir=state_dir)
        self.run, self.stop = run, threading.Event()
        self.traffic = Traffic()
        self.threads = [threading.Thread(target=self._write, args=(w,), daemon=True) for w in range(writers)]
        self.threads.append(threading.Thread(target=self._read, daemon=True))

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=RETRY_FOR_S + 15)

    def _write(self, writer: int) -> None:
        with httpx.Client(base_url=self.base, verify=self.verify, timeout=10) as client:
            seq = 0
            while not self.stop.is_set():
                seq += 1
                name = f"cpbench-{self.run}-{writer}-{seq}"
                body = {"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name, "labels": {"sovcloud.bench/run": self.run}},
                        "data": {"seq": str(seq)}}
                t0, attempt, last, acked = time.monotonic(), 0, "no attempt", False
                while not acked and time.monotonic() < t0 + RETRY_FOR_S:
                    attempt += 1
                    try:
                        r = client.post(f"/api/v1/namespaces/{NAMESPACE}/configmaps", json=body)
                    except httpx.HTTPError as err:
                        last = _kind(err)
                    else:
                        acked = r.status_code == 201 or (r.status_code == 409 and attempt > 1)
                        last = _kind(r)
                        if not acked and r.status_code < 500 and r.status_code != 429 and LEADER_CHANGED not in r.text:
                            break  # an answer, not an outage: retrying would not change it
                    if not acked:
                        self.traffic.write_retries[last] += 1
                        time.sleep(0.2)
                if acked:
                    self.traffic.acked.append(name)
                    self.traffic.latencies.append(time.monotonic() - t0)
                else:
                    self.traffic.failed_writes.append(f"{name}: {last}")

    def _read(self) -> None:
        with httpx.Client(base_url=self.base, verify=self.verify, timeout=10) as client:
            while not self.stop.is_set():
                self.traffic.reads += 1
                for attempt in (1, 2):
                    try:
                        r = client.get(f"/api/v1/namespaces/{NAMESPACE}")
                        if r.status_code == 200:
                            break
                        kind = _kind(r)
                    except httpx.HTTPError as err:
                        kind = _kind(err)
                    self.traffic.failed_reads[f"attempt {attempt}: {kind}"] += 1
                time.sleep(0.2)


def _leader_among(site, members, state_dir):
    try:
        return cluster.etcd_leader(site, members, state_dir)
    except cluster.NoLeader:
        return None


def _healthy_members(site, state_dir) -> int:
    return cluster.healthy_members(cluster.etcdctl(site, "endpoint", "health", state_dir=state_dir))


def one_round(cfg, site, state_dir, fault: str, on_leader: bool, fault_s: float, traffic: Traffic) -> dict:
    leader = cluster.etcd_leader(site, state_dir=state_dir)
    followers = [n for n in cluster.control_plane(site) if n is not leader]
    victim = leader if on_leader else followers[0]
    alive = [n for n in cluster.control_plane(site) if n is not victim]
    before = (len(traffic.acked), len(traffic.failed_writes), traffic.reads, sum(traffic.failed_reads.values()))
    t0 = time.monotonic()
    try:
        if fault == "stop":
            podman("stop", "-t", str(HALT_S), cfg.container(victim.name), timeout=HALT_S + 30)
        else:
            podman("kill", "-s", "KILL", cfg.container(victim.name), timeout=60)
        down_s = time.monotonic() - t0
        # The survivors agree on a leader: at once for a follower's loss, after an election for the leader's.
        elected = until(lambda: _leader_among(site, alive, state_dir), seconds=60, every=0.2,
                        what=f"{site.name}: the surviving etcd members agreeing on a leader")
        elected_s = time.monotonic() - t0
        time.sleep(max(0.0, fault_s - (time.monotonic() - t0)))  # the bench's load window, not a wait for an event
    finally:
        restart = time.monotonic()
        start_node(cfg.container(victim.name))
    wait_ssh(site.ip(victim), deadline_s=90)
    wait_booted(site.ip(victim), deadline_s=90)
    until(lambda: _healthy_members(site, state_dir) == 3 and all(cluster.lb_servers(site).values()),
          seconds=180, every=1, what=f"{victim.name} back in etcd (3/3 healthy) and in the API LB")
    after = (len(traffic.acked), len(traffic.failed_writes), traffic.reads, sum(traffic.failed_reads.values()))
    return {"fault": fault, "victim": victim.name, "was_leader": on_leader, "down_s": round(down_s, 1),
            "new_leader": elected.name, "leader_agreed_s": round(elected_s, 2),
            "rejoined_s": round(time.monotonic() - restart, 1),
            "writes_acked": after[0] - before[0], "writes_failed": after[1] - before[1],
            "reads": after[2] - before[2], "reads_failed": after[3] - before[3]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--site", default=None, help="the lab site whose control plane is hit (default: the secondary)")
    p.add_argument("--rounds", type=int, default=10, choices=range(1, 21), metavar="1..20")
    p.add_argument("--writers", type=int, default=2, choices=range(1, 9), metavar="1..8")
    p.add_argument("--fault-seconds", type=float, default=20)
    args = p.parse_args(argv)
    if not 5 <= args.fault_seconds <= 60:
        p.error("--fault-seconds: give 5..60")
    cfg = load()
    state_dir = inventory.state_dir(cfg)
    site = cfg.site(args.site) if args.site else next(s for s in cfg.sites if s.role != "primary")
    run = uuid.uuid4().hex[:6]
    rounds = []
    clients = Clients(site, state_dir, run, args.writers)
    selector = {"labelSelector": f"sovcloud.bench/run={run}"}
    try:
        with clients:
            time.sleep(2)  # traffic flowing before the first fault
            for i in range(args.rounds):
                fault, on_leader = ("stop", "crash")[i % 2], (i // 2) % 2 == 0
                rounds.append(one_round(cfg, site, state_dir, fault, on_leader, args.fault_seconds, clients.traffic))
                print(json.dumps(rounds[-1]), flush=True)
        # Every acknowledged write must be there: one LIST of the run's objects, read from etcd (quorum read).
        with httpx.Client(base_url=clients.base, verify=clients.verify, timeout=120) as client:
            listed = client.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps", params=selector)
            listed.raise_for_status()
            present = {item["metadata"]["name"] for item in listed.json()["items"]}
        summary, lost = _summary(site, rounds, clients.traffic, present)
        print(json.dumps(summary, indent=2), flush=True)
        for failure in clients.traffic.failed_writes[:20]:
            print(f"failed write {failure}")
        for name in lost[:20]:
            print(f"lost write {name}")
    finally:
        _delete_run(clients, selector)
    return 1 if clients.traffic.failed_writes or lost else 0


def _summary(site, rounds: list[dict], traffic: Traffic, present: set[str]) -> tuple[dict, list[str]]:
    lost = sorted(set(traffic.acked) - present)
    on_leader = [r["leader_agreed_s"] for r in rounds if r["was_leader"]]
    first = sum(v for k, v in traffic.failed_reads.items() if k.startswith("attempt 1"))
    return {
        "site": site.name, "rounds": len(rounds), "writes_acked": len(traffic.acked),
        "writes_failed": len(traffic.failed_writes), "writes_lost": len(lost),
        "write_retries": dict(traffic.write_retries),
        "write_latency_s": {"p50": round(statistics.median(traffic.latencies), 3),
                            "max": round(max(traffic.latencies), 3)} if traffic.latencies else None,
        "reads": traffic.reads, "reads_failed_first_try": first,
        "reads_failed_after_retry": sum(traffic.failed_reads.values()) - first,
        "read_failures": dict(traffic.failed_reads),
        "leader_changes": sum(r["was_leader"] for r in rounds),
        "leader_agreed_s_after_leader_loss": {"median": statistics.median(on_leader), "max": max(on_leader)}
        if on_leader else None,
        "rejoin_s": {"median": statistics.median(r["rejoined_s"] for r in rounds),
                     "max": max(r["rejoined_s"] for r in rounds)} if rounds else None,
    }, lost


def _delete_run(clients: Clients, selector: dict) -> None:
    """Delete the run's objects: tens of thousands outlast one request's timeout (the apiserver goes on with
    the deletion after it answers or drops the request), so ask again until none is listed (bounded)."""
    with httpx.Client(base_url=clients.base, verify=clients.verify, timeout=120) as client:
        def gone() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                client.delete(f"/api/v1/namespaces/{NAMESPACE}/configmaps", params=selector)
            left = client.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps", params={**selector, "limit": 1})
            return left.status_code == 200 and not left.json()["items"]

        until(gone, seconds=600, every=5, what="the bench's ConfigMaps deleted", retry_on=(httpx.HTTPError,))


if __name__ == "__main__":
    raise SystemExit(main())
