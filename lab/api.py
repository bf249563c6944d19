"""Lab lifecycle as a Python API returning data: up(config), status(config), down(config).

Idempotent: `up` creates only what is missing and rewrites gateway config only when it changed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.wait import until
from lab import cluster, gateway, inventory, s3
from lab.config import LabConfig, load
from lab.image import ensure_node_image
from lab.nodes import ensure_network, run_node, ssh, system_state, wait_booted, wait_ssh
from lab.podman import LABEL, PodmanError, podman, podman_json, process_alive, progress

# Workers run containerd and runc inside the node, like kind's nodes: privileged (mounts, namespaces,
# the pod bridge), with a private cgroup namespace so runc finds the node's cgroups at their root.
# Every other node owns its network stack like a real machine (routes, its own firewall): NET_ADMIN, scoped
# to its network namespace.
RUN_ARGS = {"worker": ["--privileged", "--cgroupns=private"], "control-plane": ["--cap-add", "NET_ADMIN"]}


def _config(config: LabConfig | str | Path | None) -> LabConfig:
    return config if isinstance(config, LabConfig) else load(config)


def _preflight() -> None:
    for tool in ("podman", "nsenter", "ssh"):
        if shutil.which(tool) is None:
            raise PodmanError(f"{tool} not found on PATH: install it (apt-get install "
                              f"{ {'nsenter': 'util-linux', 'ssh': 'openssh-client'}.get(tool, tool)})")


def up(config: LabConfig | str | Path | None = None) -> dict:
    """The lab's hardware: sites, nodes, S3, the transport and Internet networks (idempotent). Everything on
    the nodes (hardening, transport, gateway, control planes, tenants) is the lab stack's `pulumi up`:
    lab.deploy.deploy(config)."""
    cfg = _config(config)
    _preflight()
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def step(name: str, t: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - t, 1)
        progress(f"{name}: {timings[name]}s")
        return now

    t = t0
    progress("node image")
    image = ensure_node_image()
    t = step("image", t)
    for site in cfg.sites:
        ensure_network(cfg.network(site.name), str(site.subnet),
                       labels={"sovcloud.lab.site": site.name, "sovcloud.lab.kind": "site",
                               "sovcloud.lab.instance": cfg.name})
    for kind, net in (("transport", cfg.transport.subnet), ("internet", cfg.internet.subnet)):
        ensure_network(cfg.network(kind), str(net),
                       labels={"sovcloud.lab.kind": kind, "sovcloud.lab.instance": cfg.name})
    gateway.ensure_internet(cfg)
    progress(f"starting {sum(len(s.nodes) for s in cfg.sites)} nodes")
    for site in cfg.sites:
        for n in site.nodes:
            labels = {"site": site.name, "rack": n.rack, "role": n.role, "node": n.name,
                      "instance": cfg.name}
            if n.role == "gateway":
                run_node(cfg.container(n.name), n.name, gateway.gateway_networks(cfg, site),
                         cfg.node_memory_mib(n), labels, gateway.gateway_run_args(cfg))
            else:
                run_node(cfg.container(n.name), n.name, [(cfg.network(site.name), site.ip(n))],
                         cfg.node_memory_mib(n), labels, RUN_ARGS[n.role])
        s3.ensure_s3(cfg, site)
    t = step("containers", t)
    ips = [site.ip(n) for site in cfg.sites for n in site.nodes]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(wait_ssh, ips))
        states = list(pool.map(wait_booted, ips))
    t = step("ssh+boot", t)
    for site in cfg.sites:
        s3.wait_s3(site)
        s3.ensure_bucket(site)
    gateway.route_appliances(cfg)
    t = step("s3", t)
    inv = inventory.write(cfg)
    total = round(time.monotonic() - t0, 1)
    progress(f"lab hardware up in {total}s; inventory {inv}")
    return {"image": image, "inventory": str(inv), "seconds": total, "timings": timings,
            "systemd": dict(zip([n.name for s in cfg.sites for n in s.nodes], states, strict=True)),
            "s3": {s.name: s3.endpoint(s) for s in cfg.sites}}


def status(config: LabConfig | str | Path | None = None) -> list[dict]:
    """hardware_status() plus one row per site's Kubernetes API endpoint."""
    cfg = _config(config)
    # One row per site's Kubernetes API endpoint (the LB on the gateway), healthy when /readyz is ok.
    apis = [{"site": e["site"], "node": f"{e['site']}-k8s-api", "role": "k8s-api", "rack": "-",
             "ip": e["api"], "container": "-", "ssh": None, "systemd": "-", "healthy": e["ready"]}
            for e in cluster.endpoints(cfg)]
    return hardware_status(cfg) + apis


def wait_healthy(config: LabConfig | str | Path | None = None, deadline_s: float = 180) -> list[dict]:
    """Poll status() until every row is healthy; on timeout raise naming each unhealthy row and why (a
    degraded node's failed systemd units, a stopped container, an API endpoint not ready)."""
    cfg = _config(config)
    sick: list[dict] = []

    def healthy() -> list[dict] | None:
        rows = status(cfg)
        sick[:] = [r for r in rows if not r["healthy"]]
        return None if sick else rows

    try:
        return until(healthy, seconds=deadline_s, every=5, what="lab healthy")
    except TimeoutError:
        raise TimeoutError(f"lab not healthy after {deadline_s:.0f}s: "
                           + "; ".join(map(_why_unhealthy, sick))) from None


def _why_unhealthy(row: dict) -> str:
    if row["ssh"]:
        out = ssh(row["ip"], "systemctl --failed --no-legend --plain", timeout=20).stdout
        failed = [line.split()[0] for line in out.splitlines() if line.strip()]
        return f"{row['node']} systemd {row['systemd']}, failed units: {failed or 'none'}"
    if row["role"] == "k8s-api":
        return f"{row['node']} at {row['ip']} not ready"
    return f"{row['node']} container {row['container']}, ssh {row['ssh']}, systemd {row['systemd']}"


def hardware_status(config: LabConfig | str | Path | None = None) -> list[dict]:
    """One row per node and S3 endpoint: site, name, role, rack, ip, container state, ssh, systemd."""
    cfg = _config(config)
    running = {c["Names"][0]: c["State"] if c["State"] != "running" or process_alive(c.get("Pid", 0)) else "stale"
               for c in podman_json("ps", "-a", "--filter", f"label={LABEL}", "--format", "json")}
    rows = []
    for site in cfg.sites:
        for n in site.nodes:
            rows.append({"site": site.name, "node": n.name, "role": n.role, "rack": n.rack, "ip": site.ip(n),
                         "container": running.get(cfg.container(n.name), "absent")})
        s3_container = running.get(cfg.container(f"{site.name}-s3"), "absent")
        rows.append({"site": site.name, "node": f"{site.name}-s3", "role": "s3", "rack": "-",
                     "ip": site.ip("s3"), "container": s3_container})

    def probe(row: dict) -> dict:
        if row["container"] != "running":
            return {**row, "ssh": False, "systemd": "-", "healthy": False}
        if row["role"] == "s3":
            try:
                s3.wait_s3(cfg.site(row["site"]), deadline_s=3)
                return {**row, "ssh": None, "systemd": "-", "healthy": True}
            except TimeoutError:
                return {**row, "ssh": None, "systemd": "-", "healthy": False}
        state = system_state(row["ip"])
        return {**row, "ssh": state != "ssh-failed", "systemd": state,
                # The image masks units that cannot work in a container, so a healthy node boots to
                # `running`; `degraded` means a unit really failed and is reported as unhealthy.
                "healthy": state == "running"}

    with ThreadPoolExecutor(max_workers=6) as pool:
        return list(pool.map(probe, rows))


def _wait_gone(pids: list[int], deadline_s: float = 30) -> None:
    """`rm -f` can return while a removed node's PID 1 still exists (seen in CI with a privileged worker):
    wait for each to end, bounded, and kill what is left so `down` never leaves a process behind."""
    with contextlib.suppress(TimeoutError):
        until(lambda: not any(process_alive(p) for p in pids), seconds=deadline_s, every=0.5,
              what="removed containers' processes gone")
    for p in (p for p in pids if process_alive(p)):
        progress(f"PID {p} of a removed container still runs after {deadline_s:.0f}s: killing it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def down(config: LabConfig | str | Path | None = None, standalone: bool = False) -> dict:
    """Remove every container and network `up` made for this lab (labels sovcloud.lab=1 and
    sovcloud.lab.instance=<name>) and its state dir; nothing else. standalone=True also removes the
    nodes made by `lab.nodes.run_standalone` (others' playbook tests may be using them).

    Images stay: they are a content-addressed cache, not running state.
    """
    cfg = _config(config)
    filters = [[f"label={LABEL}", f"label=sovcloud.lab.instance={cfg.name}"]]
    if standalone:
        filters.append([f"label={LABEL}", "label=sovcloud.lab.kind=standalone"])
    containers: list[str] = []
    networks: list[str] = []
    for f in filters:
        args = [x for label in f for x in ("--filter", label)]
        containers += podman("ps", "-a", "-q", *args).split()
        networks += podman("network", "ls", "-q", *args).split()
    if containers:
        progress(f"removing {len(containers)} containers")
        pids = [int(p) for p in podman("inspect", "-f", "{{.State.Pid}}", *containers, check=False).split()
                if p.isdigit() and int(p) > 0]
        try:
            podman("rm", "-f", "-t", "2", *containers, timeout=300)
        except PodmanError:
            # podman loses a race with a container that stops by itself while `rm -f` kills it ("container
            # state improper: stopped"); it is stopped now, so a second pass removes what is left.
            left = set(podman("ps", "-a", "-q", "--no-trunc").split())
            rest = [c for c in containers if any(full.startswith(c) for full in left)]
            if rest:
                podman("rm", "-f", "-t", "2", *rest, timeout=300)
        _wait_gone(pids)
    if networks:
        podman("network", "rm", *networks)
    state = inventory.state_dir(cfg)
    if containers:
        from lab.deploy import forget

        forget(cfg)  # the deployment's stack state describes machines that are gone now
    if state.exists():
        shutil.rmtree(state)
    return {"containers": len(containers), "networks": networks}
