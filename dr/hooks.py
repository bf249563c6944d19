"""Volume data in a namespace backup: the application's own dump and load commands, declared on its pods.

A database's files copied while it runs are not a backup; its dump is (Velero's backup hooks, Kanister's
logical dumps). A pod opts in with two annotations, each a JSON list of argv run in the pod through the
API server's exec (no shell unless the argv asks for one):

    backup.sovcloud.kz/dump: '["pg_dump", "--clean", "--if-exists", "-h", "/tmp", "-U", "postgres", "postgres"]'
    backup.sovcloud.kz/load: '["psql", "-v", "ON_ERROR_STOP=1", "-q", "-h", "/tmp", "-U", "postgres", "postgres"]'

`dump` writes the data to stdout; `load` reads it on stdin. A backup holds one dump per annotated pod. A
restore recreates the namespace's objects, waits for the pod that replaces each dumped one (same labels, so
the same StatefulSet ordinal), loads the dump into it and dumps again: the restore is good only when the new
dump is byte for byte the one backed up, so the dump command must be deterministic (pg_dump's plain format
is; mysqldump needs --skip-dump-date). `backup.sovcloud.kz/container` names the container when the pod has
several (default: the first). The workload chart writes these from `backup.dump` / `backup.load`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import BinaryIO

from common.wait import until

DUMP, LOAD, CONTAINER = "backup.sovcloud.kz/dump", "backup.sovcloud.kz/load", "backup.sovcloud.kz/container"
# Labels that differ between a pod and its replacement from the restored controller.
VOLATILE_LABELS = ("pod-template-hash", "controller-revision-hash")
EXEC_TIMEOUT_S = 1800  # one dump or load; a stuck command must not hold the backup timer forever
CHUNK = 1 << 16


class HookError(Exception):
    pass


@dataclass(frozen=True)
class Hook:
    """A pod's dump and load commands, and the labels that find its replacement after a restore."""

    pod: str
    container: str
    dump: list[str]
    load: list[str]
    labels: dict[str, str]

    @property
    def part(self) -> str:
        return f"dump-{self.pod}"


def _argv(pod: str, annotations: dict, key: str) -> list[str]:
    raw = annotations.get(key)
    if raw is None:
        raise HookError(f"pod {pod}: annotation {key} missing (a dump needs its load, and the other way round)")
    try:
        argv = json.loads(raw)
    except json.JSONDecodeError:
        argv = None
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise HookError(f"pod {pod}: annotation {key} must be a JSON list of strings (an argv), got {raw!r}")
    return argv


def from_pod(pod: dict) -> Hook | None:
    """The pod's hook, None when it declares none; HookError names the pod and annotation at fault."""
    meta = pod["metadata"]
    annotations = meta.get("annotations") or {}
    if DUMP not in annotations and LOAD not in annotations:
        return None
    containers = [c["name"] for c in pod["spec"]["containers"]]
    container = annotations.get(CONTAINER, containers[0])
    if container not in containers:
        raise HookError(f"pod {meta['name']}: annotation {CONTAINER}={container!r} is none of its containers "
                        f"{containers}")
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in VOLATILE_LABELS}
    return Hook(meta["name"], container, _argv(meta["name"], annotations, DUMP),
                _argv(meta["name"], annotations, LOAD), labels)


def _pods(api, namespace: str, selector: str | None = None) -> list[dict]:
    from dr import k8s

    query = [("labelSelector", selector)] if selector else []
    return k8s.call(api, f"/api/v1/namespaces/{namespace}/pods", query=query).get("items", [])


def _ready(pod: dict) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def scan(api, namespace: str) -> tuple[list[Hook], list[str]]:
    """One listing of the namespace's pods: the hooks of those that declare a dump, and `pod: claim` for each
    volume claim a pod mounts without declaring one (data no backup holds). A declared pod that is not ready is
    refused: its data would silently be missing from the backup."""
    found, unhooked = [], []
    for pod in _pods(api, namespace):
        hook = from_pod(pod)
        if hook is None:
            unhooked += [f"{pod['metadata']['name']}: {v['persistentVolumeClaim']['claimName']}"
                         for v in pod["spec"].get("volumes") or [] if "persistentVolumeClaim" in v]
            continue
        if pod["metadata"].get("deletionTimestamp"):
            continue
        if not _ready(pod):
            raise HookError(f"pod {namespace}/{hook.pod} declares a dump but is not ready "
                            f"({pod.get('status', {}).get('phase')}): its data cannot be dumped now")
        found.append(hook)
    return sorted(found, key=lambda h: h.pod), sorted(unhooked)


def _exec(api, namespace: str, pod: str, container: str, argv: list[str], stdin: BinaryIO | None,
          stdout: BinaryIO | None, timeout_s: float) -> None:
    """Run argv in the container: stdin streamed from a file, stdout streamed into one (both binary)."""
    from kubernetes import client
    from kubernetes.stream import stream
    from kubernetes.stream.ws_client import STDIN_CHANNEL

    ws = stream(client.CoreV1Api(api).connect_get_namespaced_pod_exec, pod, namespace, container=container,
                command=argv, stdin=stdin is not None, stdout=True, stderr=True, tty=False, binary=True,
                _preload_content=False)
    where = f"`{' '.join(argv)}` in {namespace}/{pod}"
    end, err = time.monotonic() + timeout_s, b""

    def drain() -> None:
        nonlocal err
        if ws.peek_stdout():
            out = ws.read_stdout()
            if stdout is not None:
                stdout.write(out)
        if ws.peek_stderr():
            err = (err + ws.read_stderr())[-4000:]

    try:
        if stdin is not None:
            while chunk := stdin.read(CHUNK):
                ws.write_stdin(chunk)
                ws.update(timeout=0)
                drain()
            ws.close_channel(STDIN_CHANNEL)  # EOF, so the command finishes (v5 exec protocol)
        while ws.is_open():
            if time.monotonic() > end:
                raise HookError(f"{where}: still running after {timeout_s:.0f}s")
            ws.update(timeout=1)
            drain()
        drain()
        code = ws.returncode
    finally:
        ws.close()
    if code != 0:
        raise HookError(f"{where} failed ({code}): {err.decode(errors='replace').strip()[-800:]}")


def dump(api, namespace: str, hook: Hook, dst: BinaryIO) -> None:
    _exec(api, namespace, hook.pod, hook.container, hook.dump, None, dst, EXEC_TIMEOUT_S)


class _Digest:
    """A file-like sink that only hashes what is written to it."""

    def __init__(self) -> None:
        self.sha, self.size = hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)


def replacement(api, namespace: str, labels: dict[str, str], deadline_s: float) -> dict:
    """The one ready pod of `namespace` carrying `labels` (the dumped pod's replacement), waited for."""
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    seen: list[str] = []

    def the_one() -> dict | None:
        pods = [p for p in _pods(api, namespace, selector) if not p["metadata"].get("deletionTimestamp")]
        seen[:] = [f"{p['metadata']['name']} ({p.get('status', {}).get('phase')})" for p in pods]
        ready = [p for p in pods if _ready(p)]
        if len(pods) > 1 and len(ready) == len(pods):
            raise HookError(f"{len(pods)} pods of {namespace} match {selector}: a dump belongs to one pod (a "
                            "StatefulSet's ordinal or a one-replica workload)")
        return ready[0] if len(ready) == 1 and len(pods) == 1 else None

    try:
        return until(the_one, seconds=deadline_s, every=2, what=f"a ready pod with {selector} in {namespace}")
    except TimeoutError as err:
        raise HookError(f"no {err} (seen: {seen})") from None


def load_and_check(api, namespace: str, labels: dict[str, str], src: BinaryIO, deadline_s: float) -> dict:
    """Load a dump into the replacement pod, then dump it again and compare: the data restored is the data
    backed up, byte for byte."""
    pod = replacement(api, namespace, labels, deadline_s)
    hook = from_pod(pod)
    if hook is None:
        raise HookError(f"pod {namespace}/{pod['metadata']['name']} declares no load command ({LOAD})")
    want, size = hashlib.file_digest(src, "sha256"), src.tell()
    src.seek(0)
    _exec(api, namespace, hook.pod, hook.container, hook.load, src, None, EXEC_TIMEOUT_S)
    got = _Digest()
    _exec(api, namespace, hook.pod, hook.container, hook.dump, None, got, EXEC_TIMEOUT_S)
    if got.sha.hexdigest() != want.hexdigest():
        raise HookError(f"pod {namespace}/{hook.pod}: after the load its dump differs from the one backed up "
                        f"({got.size} bytes, backed up {size}): the data was not restored as it was, or "
                        "the dump is not deterministic, or something wrote to it meanwhile")
    return {"pod": hook.pod, "bytes": size, "sha256": want.hexdigest()}
