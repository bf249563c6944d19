"""The lab's SSH key pair, generated once and reused by every node and by Ansible."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.podman import CACHE

SSH_DIR = CACHE / "ssh"


def ensure_key() -> Path:
    """Path of the private key (ed25519); its `.pub` is baked into the node image."""
    key = SSH_DIR / "id_ed25519"
    if not key.exists():
        SSH_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sovcloud-lab", "-f", str(key)],
                       check=True)
    return key
