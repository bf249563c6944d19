"""Drive the real Pulumi program with the Automation API (tests, `lab up`, benchmarks).

Runs the repo's program (infra/) against a local file backend with the passphrase secrets provider: no
network, no Pulumi Cloud. A scratch work dir holds the stack settings so the repo's Pulumi.<stack>.yaml
files stay as committed.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from toolchain import HOME, REPO, tool_env

LAB_PASSPHRASE = "sovcloud-lab"  # noqa: S105 -- the lab's own, not a secret; real stacks bring theirs
STATE = HOME / "state"


def _options(backend: Path, passphrase: str, **kwargs: Any) -> auto.LocalWorkspaceOptions:
    """Workspace options every stack here shares: project tools on PATH, our pulumi, file backend."""
    backend.mkdir(parents=True, exist_ok=True)
    env = tool_env()
    env.update(PULUMI_CONFIG_PASSPHRASE=passphrase, PULUMI_BACKEND_URL=f"file://{backend}")
    return auto.LocalWorkspaceOptions(env_vars=env, pulumi_command=auto.PulumiCommand(
        root=str(HOME), skip_version_check=True), **kwargs)  # HOME/bin/pulumi


def stack(name: str, cloud: dict[str, Any], work_dir: Path, backend: Path = STATE,
          passphrase: str = LAB_PASSPHRASE, kubeconfigs: dict[str, str] | None = None,
          hosts: dict[str, Any] | None = None) -> auto.Stack:
    """Select or create stack `name` of the sovcloud program, configured with `cloud` (the stack model),
    optionally `kubeconfigs` of existing clusters or `hosts` (`sovcloud:hosts`: run the host-level steps)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    project = auto.ProjectSettings(name="sovcloud", runtime="python", main=str(REPO / "infra"),
                                   backend=auto.ProjectBackend(f"file://{backend}"))
    st = auto.create_or_select_stack(name, work_dir=str(work_dir), opts=_options(
        backend, passphrase, work_dir=str(work_dir), project_settings=project, secrets_provider="passphrase"))
    st.set_config("sovcloud:cloud", auto.ConfigValue(json.dumps(cloud)))
    if kubeconfigs:
        st.set_config("sovcloud:kubeconfigs", auto.ConfigValue(json.dumps(kubeconfigs), secret=True))
    elif "sovcloud:kubeconfigs" in st.get_all_config():
        st.remove_config("sovcloud:kubeconfigs")
    if hosts:
        st.set_config("sovcloud:hosts", auto.ConfigValue(json.dumps(hosts)))
    return st


def release_dead_locks(name: str, backend: Path = STATE) -> list[Path]:
    """Remove the file backend's locks on stack `name` whose process, on this machine, is gone (a killed
    `pulumi up` leaves its lock behind, and every later run of the stack then refuses to start). A lock held by
    a live process, or taken on another machine, stays. Returns the locks removed."""
    removed = []
    for lock in sorted((backend / ".pulumi" / "locks").glob(f"*/*/{name}/*.json")):
        try:
            holder = json.loads(lock.read_text())
            if holder.get("hostname") != socket.gethostname():
                continue
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            lock.unlink(missing_ok=True)
            lock.with_name(lock.name + ".attrs").unlink(missing_ok=True)  # the file backend's metadata of it
            removed.append(lock)
        except (OSError, ValueError, KeyError):
            continue  # unreadable, or alive under another user: not ours to judge
    return removed


def changed_resources(events: list[auto.EngineEvent]) -> dict[str, str]:
    """URN -> operation for every resource a preview/up would touch (anything but `same`).

    Provider resources are left out: the engine hands the stack config to dynamic providers, so any config
    change "updates" the provider itself without touching a resource.
    """
    out = {}
    for event in events:
        pre = event.resource_pre_event
        if pre and pre.metadata.op.value != "same" and "::pulumi:providers:" not in pre.metadata.urn:
            out[pre.metadata.urn] = pre.metadata.op.value
    return out


def committed_stack(name: str, backend: Path = STATE, passphrase: str = LAB_PASSPHRASE) -> auto.Stack:
    """Stack `name` exactly as committed (Pulumi.<name>.yaml in the repo), as `pulumi up --stack` runs it."""
    return auto.create_or_select_stack(name, work_dir=str(REPO), opts=_options(backend, passphrase))

