"""The lab node image: a Debian 12 rootfs from debootstrap, imported into podman and finished by a build.

The image tag is a hash of every input (package list, mirror, Containerfile, lab SSH key), so
`ensure_node_image()` rebuilds only when an input changed; the debootstrap tarball is cached too.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from lab.podman import CACHE, exists, podman, progress
from lab.sshkey import ensure_key

NODE_DIR = Path(__file__).resolve().parent / "node"
SUITE = "bookworm"
IMAGE_REPO = "localhost/sovcloud-lab-node"
ROOTFS_REPO = "localhost/sovcloud-lab-rootfs"
# Bump when the build steps in this file change (the Containerfile and key are hashed directly).
BUILD_REV = "2"
# A server's base OS that Ansible can target; nothing a role installs (roles bring their packages from the
# stack's package source, SC-HST-08).
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo", "iproute2", "nftables",
    "iptables", "curl", "ca-certificates", "chrony", "auditd", "iputils-ping", "procps", "tcpdump", "cron",
]


def debian_mirror() -> str:
    """The mirror this machine's apt uses, so the lab needs no other network access."""
    for src in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        uri, suites = None, ""
        for line in src.read_text().splitlines() + [""]:
            if line.startswith("URIs:"):
                uri = line.split()[1]
            elif line.startswith("Suites:"):
                suites = line
            elif not line.strip():
                if uri and SUITE in suites.split() and "security" not in uri:
                    return uri
                uri, suites = None, ""
    lst = Path("/etc/apt/sources.list")
    if lst.exists():
        for line in lst.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and SUITE in parts and "security" not in line:
                return next(p for p in parts[1:] if p.startswith("http"))
    return "http://deb.debian.org/debian"


def _rootfs_key(mirror: str) -> str:
    return hashlib.sha256("\n".join([SUITE, mirror, *sorted(PACKAGES)]).encode()).hexdigest()[:12]


def ensure_rootfs() -> Path:
    """Cached debootstrap tarball (minutes to make once, then reused)."""
    mirror = debian_mirror()
    tarball = CACHE / f"rootfs-{SUITE}-{_rootfs_key(mirror)}.tar"
    if tarball.exists():
        return tarball
    for tool in ("debootstrap", "tar"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: install it (apt-get install {tool})")
    CACHE.mkdir(parents=True, exist_ok=True)
    progress(f"debootstrap {SUITE} from {mirror} (once; a few minutes)")
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as tmp:
        root = Path(tmp) / "root"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                        str(root), mirror], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["chroot", str(root), "apt-get", "clean"], check=True)
        part = tarball.with_suffix(".part")
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(part), "."], check=True)
        part.rename(tarball)
    return tarball


def image_tag() -> str:
    """Hash of all image inputs; cheap (no build), so callers can check freshness."""
    h = hashlib.sha256((_rootfs_key(debian_mirror()) + BUILD_REV).encode())
    for f in sorted(NODE_DIR.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    h.update(ensure_key().with_suffix(".pub").read_bytes())
    return h.hexdigest()[:12]


def ensure_node_image() -> str:
    """Reference of the lab node image, built only if no image with the current inputs' hash exists."""
    ref = f"{IMAGE_REPO}:{image_tag()}"
    if exists("image", ref):
        return ref
    tarball = ensure_rootfs()
    base = f"{ROOTFS_REPO}:{tarball.stem.rsplit('-', 1)[1]}"
    if not exists("image", base):
        progress(f"podman import {tarball.name}")
        podman("import", "--change", "CMD=/sbin/init", str(tarball), base, timeout=900)
    progress(f"podman build {ref}")
    with tempfile.TemporaryDirectory(prefix="sovlab-build-") as ctx:
        for f in NODE_DIR.iterdir():
            shutil.copy(f, ctx)
        shutil.copy(ensure_key().with_suffix(".pub"), Path(ctx) / "authorized_keys")
        # Not labelled sovcloud.lab=1: containers inherit image labels, and `lab down` must not remove
        # containers others start from this image.
        podman("build", "--label", "sovcloud.lab.image=node", "--build-arg",
               f"BASE={base}", "-t", ref, "-f", str(Path(ctx) / "Containerfile"), ctx, timeout=900)
    # Drop superseded node images; one still used by a container stays (rmi refuses).
    for old in podman("images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO).split():
        if old != ref:
            podman("rmi", old, check=False)
    return ref
