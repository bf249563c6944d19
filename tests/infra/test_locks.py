"""A killed `pulumi up` leaves its lock in the file backend; the lab removes it only when its process is gone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from infra.automation import release_dead_locks


def _lock(backend, stack: str, name: str, pid: int, hostname: str):
    d = backend / ".pulumi" / "locks" / "organization" / "sovcloud" / stack
    d.mkdir(parents=True, exist_ok=True)
    lock = d / f"{name}.json"
    lock.write_text(json.dumps({"pid": pid, "username": "root", "hostname": hostname, "timestamp": "x"}))
    (d / f"{name}.json.attrs").write_text("{}")
    return lock


def test_only_the_lock_of_a_dead_process_on_this_machine_is_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    here = socket.gethostname()
    dead = _lock(tmp_path, "lab", "dead", int(gone.stdout), here)
    alive = _lock(tmp_path, "lab", "alive", os.getpid(), here)
    elsewhere = _lock(tmp_path, "lab", "elsewhere", int(gone.stdout), here + "-other")
    other_stack = _lock(tmp_path, "lab-bench", "dead", int(gone.stdout), here)

    assert release_dead_locks("lab", backend=tmp_path) == [dead]
    assert not dead.exists() and not dead.with_name("dead.json.attrs").exists()
    assert alive.exists() and elsewhere.exists() and other_stack.exists()
    assert release_dead_locks("lab", backend=tmp_path) == []
