"""Node containers: systemd as PID 1, sshd for the lab key, labels site/rack/role."""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import subprocess
from pathlib import Path

from common.wait import until
from lab.image import ensure_node_image
from lab.podman import LABEL, PodmanError, exists, podman, podman_json, process_alive, progress
from lab.sshkey import ensure_key

SSH_USER = "sovadmin"
STANDALONE_NET = "sovlab-standalone"
STANDALONE_SUBNET = "10.210.250.0/24"


def ssh_args(ip: str, key: Path | None = None) -> list[str]:
    return ["ssh", "-i", str(key or ensure_key()), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
            f"{SSH_USER}@{ip}"]


def ssh(ip: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ssh_args(ip), command], capture_output=True, text=True, timeout=timeout)


def ensure_network(name: str, subnet: str, internal: bool = True,
                   labels: dict[str, str] | None = None) -> None:
    # netavark 1.4 programs the host firewall with iptables; without it every network fails obscurely.
    if shutil.which("iptables") is None:
        raise PodmanError("iptables not found: podman's netavark needs it (apt-get install iptables)")
    def check_existing() -> bool:
        if not exists("network", name):
            return False
        info = podman_json("network", "inspect", name)[0]
        have = [s["subnet"] for s in info.get("subnets", [])]
        if subnet not in have:
            raise PodmanError(f"network {name} exists with subnets {have}, expected {subnet}: run `lab down`")
        return True

    if check_existing():
        return
    args = ["network", "create", "--subnet", subnet, "--label", LABEL]
    for k, v in (labels or {}).items():
        args += ["--label", f"{k}={v}"]
    # Internal: no NAT or default route, so the only way out of a site is what the lab builds.
    if internal:
        args.append("--internal")
    try:
        podman(*args, name)
    except PodmanError:
        if not check_existing():  # not a concurrent caller creating the same network first
            raise


# Every systemd container (all run as host uid 0) takes several inotify instances; the kernel default of 128
# per uid is exhausted by ~20 nodes on a shared host and units then fail at boot (the remedy kind documents).
INOTIFY_MIN = {"max_user_instances": 1024, "max_user_watches": 524288}


def ensure_host_limits() -> None:
    for key, want in INOTIFY_MIN.items():
        path = Path("/proc/sys/fs/inotify") / key
        if int(path.read_text()) < want:
            progress(f"raising fs.inotify.{key} to {want} (systemd nodes need it)")
            path.write_text(str(want))


def start_node(container: str) -> None:
    """Start a stopped node container. The inotify limits are checked first: a systemd node booted while
    they are exhausted never reaches sysinit.target (sshd never starts), however long one waits."""
    ensure_host_limits()
    podman("start", container, timeout=60)


def _reuse(container: str, image: str) -> bool:
    """Keep an existing container (starting it if stopped) unless it runs an outdated image."""
    if not exists("container", container):
        return False
    info = podman_json("container", "inspect", container)[0]
    state = info["State"]
    # Anything but running-with-a-live-process or cleanly stopped (e.g. "stopping" forever, or "running"
    # with its process gone) cannot be started again: recreate it.
    stale = not (state.get("Running") and process_alive(state.get("Pid", 0))
                 or state.get("Status") in ("created", "configured", "exited", "stopped"))
    if info["ImageName"] != image or stale:
        progress(f"{container}: {'stale state ' + state.get('Status', '?') if stale else 'image changed'}"
                 ", recreating")
        podman("rm", "-f", "-t", "2", container)
        return False
    if not info["State"].get("Running"):
        start_node(container)
    return True


def run_node(container: str, hostname: str, networks: list[tuple[str, str | None]], memory_mib: int,
             labels: dict[str, str], extra: list[str] | None = None) -> None:
    """Start (or leave running) one systemd node container; networks are (name, static ip or None)."""
    image = ensure_node_image()
    if _reuse(container, image):
        return
    ensure_host_limits()
    args = ["run", "-d", "--name", container, "--hostname", hostname, "--systemd=always",
            "--memory", f"{memory_mib}m", "--memory-swap", f"{memory_mib}m", "--label", LABEL,
            "--stop-timeout", "5"]
    for net, ip in networks:
        args += ["--network", f"{net}:ip={ip}" if ip else net]
    for k, v in labels.items():
        args += ["--label", f"sovcloud.lab.{k}={v}"]
    podman(*args, *(extra or []), image)


def container_ip(container: str, network: str | None = None) -> str:
    nets = podman_json("container", "inspect", container)[0]["NetworkSettings"]["Networks"]
    if network:
        return nets[network]["IPAddress"]
    return next(iter(nets.values()))["IPAddress"]


def pid(container: str) -> int:
    return int(podman("inspect", "-f", "{{.State.Pid}}", container).strip())


def netns(container: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host tool (ip, nft) inside a node's network namespace: nodes lack CAP_NET_ADMIN on purpose."""
    r = subprocess.run(["nsenter", "-t", str(pid(container)), "-n", *cmd], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise PodmanError(f"{container}: {' '.join(cmd)} failed: {r.stderr.strip()}")
    return r


def wait_ssh(ip: str, deadline_s: float = 90) -> None:
    def logged_in() -> bool:
        r = ssh(ip, "true", timeout=10)
        if r.returncode != 0:
            raise ConnectionError(r.stderr.strip())
        return True

    until(logged_in, seconds=deadline_s, every=1, what=f"ssh sovadmin@{ip} ready",
          retry_on=(ConnectionError, subprocess.TimeoutExpired))


def system_state(ip: str) -> str:
    """`systemctl is-system-running` over ssh, or `ssh-failed`."""
    try:
        r = ssh(ip, "systemctl is-system-running", timeout=15)
    except subprocess.TimeoutExpired:
        return "ssh-failed"
    out = r.stdout.strip()
    return out if out else "ssh-failed"


def wait_booted(ip: str, deadline_s: float = 90) -> str:
    """Wait until systemd has finished booting (running/degraded), return that state."""
    states = ["unknown"]

    def booted() -> bool:
        states.append(system_state(ip))
        return states[-1] in ("running", "degraded")

    with contextlib.suppress(TimeoutError):
        until(booted, seconds=deadline_s, every=1, what=f"{ip} booted")
    return states[-1]


def run_standalone(name: str, network: str | None = None, memory_mib: int = 512) -> tuple[str, Path]:
    """One lab node outside any site, for playbook tests: returns (ip, ssh private key path).

    network=None uses the lab's own internal `sovlab-standalone` network (created if missing).
    Remove it with `remove_standalone(name)`; `lab down` removes it too.
    """
    net = network or STANDALONE_NET
    if network is None:
        ensure_network(STANDALONE_NET, STANDALONE_SUBNET, labels={"sovcloud.lab.kind": "standalone"})
    container = f"sovlab-sa-{name}"
    run_node(container, name, [(net, None)], memory_mib, {"role": "standalone", "node": name,
                                                          "kind": "standalone"})
    ip = container_ip(container, net)
    ipaddress.ip_address(ip)
    wait_ssh(ip)
    wait_booted(ip)
    return ip, ensure_key()


def remove_standalone(name: str) -> None:
    podman("rm", "-f", "-t", "2", f"sovlab-sa-{name}", check=False)
    # The shared standalone network goes with its last node (podman refuses while one still uses it).
    podman("network", "rm", STANDALONE_NET, check=False)


def run_plain(container: str, hostname: str, networks: list[tuple[str, str | None]], memory_mib: int,
              labels: dict[str, str], extra: list[str], command: list[str]) -> None:
    """A single-process container from the node image (S3 server, Internet test servers): no systemd."""
    image = ensure_node_image()
    if _reuse(container, image):
        return
    args = ["run", "-d", "--name", container, "--hostname", hostname, "--systemd=false",
            "--memory", f"{memory_mib}m", "--memory-swap", f"{memory_mib}m", "--label", LABEL]
    for net, ip in networks:
        args += ["--network", f"{net}:ip={ip}" if ip else net]
    for k, v in labels.items():
        args += ["--label", f"sovcloud.lab.{k}={v}"]
    podman(*args, *extra, image, *command)
