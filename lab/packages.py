"""The lab's offline package source: a flat apt repo (debs + Packages) as one tar, which the stack names as
`package_source_offline_repo` and the package_source role ships to every node.

Lab nodes sit on internal podman networks with no route to a Debian mirror, exactly like an air-gapped
government node that only sees an in-country mirror. So every package the roles install (the `*_packages`
variables of playbooks/roles/*/defaults/main.yml, their one list) is downloaded once on this machine, from
the same release as the node image, with the dependencies the image lacks.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from lab.image import ensure_node_image
from lab.podman import CACHE, podman

REPO = Path(__file__).resolve().parent.parent
ROLES = REPO / "playbooks" / "roles"
# `package_source_offline_repo` of the lab: a stable path a stack config can name.
REPO_TAR = CACHE / "apt-offline.tar"
# `monitoring_python_wheels` of the lab: the exporters' Python packages, as wheels.
WHEELS_TAR = CACHE / "python-wheels.tar"
PYPROJECT = REPO / "pyproject.toml"


def role_packages() -> list[str]:
    """Every package a role may install: the lists its defaults name `<something>_packages` (what a role
    removes is named otherwise, e.g. hardening_unwanted_software)."""
    names: set[str] = set()
    for defaults in sorted(ROLES.glob("*/defaults/main.yml")):
        for key, value in (yaml.safe_load(defaults.read_text()) or {}).items():
            if key.endswith("_packages") and isinstance(value, list):
                names.update(value)
    return sorted(names)


def ensure_offline_repo(packages: list[str] | None = None, tar: Path = REPO_TAR) -> Path:
    """Tar of a flat apt repo (debs + Packages) with `packages` and their dependencies the node image lacks,
    at a stable path; rebuilt only when the node image or the package list changes."""
    packages = role_packages() if packages is None else packages
    image = ensure_node_image()
    key = hashlib.sha256("\n".join([image, *sorted(packages)]).encode()).hexdigest()[:12]
    stamp = tar.with_suffix(".key")
    if stamp.exists() and stamp.read_text() == key and tar.exists():
        return tar
    scan = shutil.which("dpkg-scanpackages")
    if scan is None:
        raise RuntimeError("dpkg-scanpackages not found: install it (apt-get install dpkg-dev)")
    installed = dict(ln.split(" ", 1) for ln in podman("run", "--rm", "--systemd=false", image, "dpkg-query",
                                                           "-W", "-f=${Package} ${Version}\n").splitlines())
    out = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                          "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages],
                         capture_output=True, text=True, check=True).stdout
    closure = sorted({ln for ln in out.splitlines() if ln and not ln.startswith((" ", "<"))})
    # Installed ones go in too when this machine's candidate is newer (e.g. perl needs perl-base of its own
    # point release): apt on the node then upgrades them.
    policy = subprocess.run(["apt-cache", "policy", *[n for n in closure if n in installed]],
                            capture_output=True, text=True, check=True).stdout
    candidate = dict(re.findall(r"^(\S+):\n\s+Installed: .*\n\s+Candidate: (\S+)", policy, re.M))
    names = [n for n in closure if n not in installed or candidate.get(n, installed[n]) != installed[n]]
    # Alternatives apt would never pick on a systemd node (and that conflict with what is installed).
    names = [n for n in names if n not in {"libelogind0", "cdebconf"}]
    part = tar.with_suffix(".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    subprocess.run(["apt-get", "download", *names], cwd=part, check=True, capture_output=True, timeout=600)
    pk = subprocess.run([scan, "--multiversion", "."], cwd=part, check=True, capture_output=True,
                        text=True).stdout
    (part / "Packages").write_text(pk)
    subprocess.run(["tar", "-C", str(part), "--sort=name", "-cf", str(tar.with_suffix(".tmp")), "."], check=True)
    tar.with_suffix(".tmp").rename(tar)
    stamp.write_text(key)
    shutil.rmtree(part)
    return tar


def exporter_requirements() -> list[str]:
    """The exporters' Python packages (the monitoring_exporters role's list) at the project's own pins."""
    import tomllib

    names = yaml.safe_load((ROLES / "monitoring_exporters" / "defaults" / "main.yml").read_text())[
        "monitoring_exporters_python"]
    pins = {re.split(r"[=<>!~\[]", d, maxsplit=1)[0].lower(): d
            for d in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]}
    missing = [n for n in names if n.lower() not in pins]
    if missing:
        raise RuntimeError(f"monitoring_exporters_python names {missing}, which pyproject.toml does not pin: "
                           "add them to [project] dependencies")
    return [pins[n.lower()] for n in names]


def ensure_wheels(tar: Path = WHEELS_TAR) -> Path:
    """Tar of the wheels (with dependencies) of the exporters' packages for the nodes' Python (Debian 12:
    CPython 3.11 on x86_64, as this machine's venv), downloaded once per change of the requirements."""
    import sys

    requirements = exporter_requirements()
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    stamp = tar.with_suffix(".key")
    if stamp.exists() and stamp.read_text() == key and tar.exists():
        return tar
    part = tar.with_suffix(".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                    "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--platform",
                    "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", "--dest", str(part),
                    *requirements], check=True, timeout=600)
    subprocess.run(["tar", "-C", str(part), "--sort=name", "--mtime=@0", "-cf", str(tar.with_suffix(".tmp")), "."],
                   check=True)
    tar.with_suffix(".tmp").rename(tar)
    stamp.write_text(key)
    shutil.rmtree(part)
    return tar
