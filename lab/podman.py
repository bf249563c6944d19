"""Runs podman with the lab's own configuration (lab/conf), never the host's /etc settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from toolchain import HOME

CONF = Path(__file__).resolve().parent / "conf"
CACHE = HOME / "lab"
# Everything the lab creates carries this label so `lab down` removes exactly that and nothing else.
LABEL = "sovcloud.lab=1"


class PodmanError(RuntimeError):
    pass


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["CONTAINERS_CONF"] = str(CONF / "containers.conf")
    e["CONTAINERS_REGISTRIES_CONF"] = str(CONF / "registries.conf")
    return e


def podman(*args: str, check: bool = True, timeout: float = 600, input: str | None = None) -> str:
    cmd = ["podman", *args]
    if args[:1] == ("build",):
        # There is no env var for the signature policy; build is the one subcommand that reads it.
        cmd = ["podman", "build", "--signature-policy", str(CONF / "policy.json"), *args[1:]]
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise PodmanError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r.stdout


def podman_json(*args: str) -> list | dict:
    out = podman(*args)
    return json.loads(out) if out.strip() else []


def exists(kind: str, name: str) -> bool:
    """kind: container | network | image."""
    cmd = [kind, "exists", name]
    return subprocess.run(["podman", *cmd], env=env(), capture_output=True).returncode == 0


def process_alive(pid: int) -> bool:
    """Whether a container's recorded PID still exists. When the host's processes are killed without podman
    being told (a sandbox or VM restart that keeps /run), podman keeps reporting the container as running;
    reusing such a container leaves a node whose sshd never answers."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text() if pid > 0 else ""
    except FileNotFoundError:
        return False
    # A killed PID 1 whose parent (conmon) died too may linger as a zombie nobody reaps.
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def progress(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)
