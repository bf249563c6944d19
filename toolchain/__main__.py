"""`python -m toolchain setup|doctor`: install or build every tool the project needs, then report.

setup is idempotent: a second run finds everything cached and takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import BIN, HOME, PULUMI_HOME, REPO, VENV, pins, tool_env
from .gobuild import GoTool, build, download

PULUMI_SDK_MODULE = "github.com/pulumi/pulumi/sdk/v3"

NODE_BINARIES = ["kubelet", "kube-proxy"]


def kubernetes(version: str, node: bool = False) -> GoTool:
    """The control plane (or, node=True, the kubelet and kube-proxy) of Kubernetes `version`, built from
    k8s.io/kubernetes. The node binaries are cached apart: adding them rebuilt nothing else."""
    minor_patch = version.split(".", 1)[1]
    return GoTool(
        name="kubernetes-node" if node else "kubernetes",
        version=version,
        module="k8s.io/kubernetes",
        commands={c: f"k8s.io/kubernetes/cmd/{c}" for c in
                  (NODE_BINARIES if node else ["kube-apiserver", "kube-controller-manager", "kube-scheduler"])},
        ldflags=[f"-X k8s.io/component-base/version.{k}={v}" for k, v in {
            "gitVersion": f"v{version}", "gitMajor": version.split(".")[0], "gitMinor": version.split(".")[1],
            "gitTreeState": "clean"}.items()],
        # staging modules k8s.io/api etc. are published as v0.<minor>.<patch>
        local_replacement_version=lambda module: f"v0.{minor_patch}",
    )


def conformance(version: str) -> GoTool:
    """Kubernetes `version`'s conformance suite (e2e.test), its runner (ginkgo), agnhost (the program most of its
    test pods run), the sample API server the aggregator test registers and nnp (the no-new-privileges test's
    setuid program), from the same module as the cluster (built by `make conformance`, not by setup)."""
    tool = kubernetes(version)
    return GoTool(
        name="kubernetes-conformance", version=version, module="k8s.io/kubernetes",
        commands={"agnhost": "k8s.io/kubernetes/test/images/agnhost",
                  "ginkgo": "github.com/onsi/ginkgo/v2/ginkgo", "sample-apiserver": "k8s.io/sample-apiserver",
                  "nnp": "k8s.io/kubernetes/test/images/nonewprivs"},
        tests={"e2e.test": "k8s.io/kubernetes/test/e2e"},
        ldflags=tool.ldflags, local_replacement_version=tool.local_replacement_version,
        # The proxy refuses the zips of sample-apiserver v0.33.6 and later: its last served server, built against
        # the cluster's own apiserver libraries.
        overrides={"k8s.io/sample-apiserver": "v0.33.5"},
        extra_modules=[f"github.com/onsi/ginkgo/v2/ginkgo@v{pins.GINKGO}"],
        static=True,  # agnhost runs in the test images
    )


# The stacks whose clusters' versions `setup` builds (a cluster runs the binaries of its kubernetes_version).
STACK_FILES = [*sorted((REPO / "infra" / "stacks").glob("*.yaml")), *sorted(REPO.glob("Pulumi.*.yaml"))]
# Where each version's four binaries are laid out together: the stacks' `cluster_kubernetes_dir`.
KUBERNETES_RELEASES = HOME / "kubernetes"


def kubernetes_versions() -> list[str]:
    """pins.KUBERNETES (the host's own tools) and every `kubernetes_version` the stack files name. A regex, not
    YAML: setup runs before the venv (and PyYAML) exists."""
    found = {pins.KUBERNETES}
    for path in STACK_FILES:
        found.update(re.findall(r"kubernetes_version:\s*[\"']?(\d+\.\d+\.\d+)", path.read_text()))
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


GO_TOOLS = [
    GoTool(
        name="pulumi",
        version=pins.PULUMI,
        module="github.com/pulumi/pulumi/pkg/v3",
        commands={"pulumi": "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"},
        ldflags=[f"-X {PULUMI_SDK_MODULE}/go/common/version.Version=v{pins.PULUMI}"],
        local_replacement_version=lambda module: f"v{pins.PULUMI}",
    ),
    GoTool(
        name="pulumi-language-python",
        version=pins.PULUMI,
        module=str(REPO / "toolchain" / "langhost"),
        commands={"pulumi-language-python": "."},
        ldflags=[f"-X main.version={pins.PULUMI}"],
    ),
    GoTool(
        name="pulumi-resource-kubernetes",
        version=pins.PULUMI_KUBERNETES,
        module="github.com/pulumi/pulumi-kubernetes/provider/v4",
        module_version=pins.PULUMI_KUBERNETES_MODULE_VERSION,
        commands={"pulumi-resource-kubernetes": "."},
        # upstream's Makefile: `go generate` stamps the version into the schema the binary embeds
        main_package="cmd/pulumi-resource-kubernetes",
        generate_env={"VERSION": pins.PULUMI_KUBERNETES},
        ldflags=[f"-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version={pins.PULUMI_KUBERNETES}"],
        # its go.mod replaces the SDK module with the repository's ../sdk, published at the same version
        local_replacement_version=lambda module: f"v{pins.PULUMI_KUBERNETES}",
        plugin="resource kubernetes",
    ),
    GoTool(
        name="helm",
        version=pins.HELM,
        module="helm.sh/helm/v3",
        commands={"helm": "helm.sh/helm/v3/cmd/helm"},
        ldflags=[f"-X helm.sh/helm/v3/internal/version.version=v{pins.HELM}"],
    ),
    kubernetes(pins.KUBERNETES),
    kubernetes(pins.KUBERNETES, node=True),
    GoTool(
        name="coredns",
        version=pins.COREDNS,
        module="github.com/coredns/coredns",
        commands={"coredns": "github.com/coredns/coredns"},
        static=True,  # it is also the clusters' DNS image, alone in it
    ),
    GoTool(
        name="local-path-provisioner",
        version=pins.LOCAL_PATH_PROVISIONER,
        module="github.com/rancher/local-path-provisioner",
        commands={"local-path-provisioner": "github.com/rancher/local-path-provisioner"},
        ldflags=[f"-X main.VERSION={pins.LOCAL_PATH_PROVISIONER}"],
        static=True,  # alone in the clusters' storage image
    ),
    GoTool(
        name="blackbox_exporter",
        version=pins.BLACKBOX_EXPORTER,
        module="github.com/prometheus/blackbox_exporter",
        commands={"blackbox_exporter": "github.com/prometheus/blackbox_exporter"},
        ldflags=[f"-X github.com/prometheus/common/version.Version={pins.BLACKBOX_EXPORTER}"],
    ),
]
LOGS = HOME / "logs"


def log(msg: str) -> None:
    print(msg, flush=True)


def step(title: str):
    log(f"==> {title}")
    return time.monotonic()


# --- Debian packages -------------------------------------------------------------------------

def _has(cmd: str) -> bool:
    return Path(cmd).exists() if cmd.startswith("/") else shutil.which(cmd) is not None


def _quiet(what: str, log_name: str, commands: list[list[str]], env: dict[str, str] | None = None) -> None:
    """Run `commands` with their output in a log: one line on the console, with the time it took."""
    LOGS.mkdir(parents=True, exist_ok=True)
    logfile = LOGS / log_name
    print(f"  {what} (log: {logfile}) ...", end="", flush=True)
    t0 = time.monotonic()
    with logfile.open("w") as out:
        for cmd in commands:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            if subprocess.run(cmd, stdout=out, stderr=out, env=env).returncode != 0:
                print(" FAILED")
                sys.exit(f"setup: `{' '.join(cmd)}` failed; see {logfile}")
    print(f" {_elapsed(time.monotonic() - t0)}")


def ensure_debian_packages() -> None:
    missing = [pkg for pkg, cmd in pins.DEBIAN_PACKAGES.items() if not _has(cmd)]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"setup: missing Debian packages {' '.join(missing)}; run as root or "
                 f"`sudo apt-get install {' '.join(missing)}`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _quiet(f"installing Debian packages: {' '.join(missing)}", "setup-apt.log",
           [["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]],
           env)


# --- Python virtualenv -----------------------------------------------------------------------

def ensure_venv() -> None:
    stamp = VENV / ".sovcloud-stamp"
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    commands = [] if (VENV / "bin" / "python").exists() else [[sys.executable, "-m", "venv", str(VENV)]]
    commands.append([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                     "-e", f"{REPO}[dev]"])
    _quiet("installing the pinned Python dependencies", "setup-venv.log", commands)
    stamp.write_text(digest)


def ensure_isolated_python_tools() -> None:
    for spec, command in pins.ISOLATED_PYTHON_TOOLS.items():
        venv = HOME / "venvs" / spec.replace("==", "-")
        if not (venv / "bin" / command).exists():
            _quiet(f"installing {spec} into its own venv {venv}", f"setup-{command}.log", [
                [sys.executable, "-m", "venv", str(venv)],
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec]])
        BIN.mkdir(parents=True, exist_ok=True)
        _link(venv / "bin" / command, BIN / command)


# --- Go-built tools --------------------------------------------------------------------------

def _official_binary(name: str, version: str) -> Path | None:
    """An official binary of exactly `version` already on PATH (outside our cache), if any."""
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN]
    found = shutil.which(name, path=os.pathsep.join(path))
    if not found:
        return None
    reported = _version_of([found, "version"]) or _version_of([found, "--version"])
    return Path(found) if reported == version else None


def _build(tool: GoTool) -> None:
    """Build one tool (once; cached afterwards): one line on the console, the Go output in a log."""
    if tool.is_built():
        return
    LOGS.mkdir(parents=True, exist_ok=True)
    logfile = LOGS / f"build-{tool.name}-{tool.version}.log"
    print(f"  {tool.name} {tool.version}: building from its Go module (log: {logfile}) ...", end="", flush=True)
    t0 = time.monotonic()
    with logfile.open("w") as out:
        try:
            build(tool, out)
        except subprocess.CalledProcessError as err:
            print(" FAILED")
            sys.exit(f"setup: building {tool.name} {tool.version} failed ({err}); see {logfile}")
    print(f" {_elapsed(time.monotonic() - t0)}")


def _elapsed(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s" if seconds >= 60 else f"{seconds:.0f}s"


def ensure_go_tools() -> None:
    BIN.mkdir(parents=True, exist_ok=True)
    for tool in GO_TOOLS:
        if tool.plugin:
            _build(tool)
            _install_plugin(tool)
            continue
        for out, target in tool.binaries().items():
            official = _official_binary(out, tool.version)
            if official:
                _link(official, BIN / out)
                continue
            _build(tool)
            _link(target, BIN / out)
    # The SDK module ships the scripts the Python language host and dynamic providers run.
    sdk = go_module_dir(PULUMI_SDK_MODULE, f"v{pins.PULUMI}")
    for script in ("cmd/pulumi-language-python-exec", "dist/pulumi-resource-pulumi-python"):
        src = sdk / "python" / script
        dst = BIN / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            dst.unlink(missing_ok=True)
            shutil.copyfile(src, dst)
            dst.chmod(0o755)


def _install_plugin(tool: GoTool) -> None:
    """`pulumi plugin install <kind> <name> <version> --file <binary>`, once per version: the engine then finds the
    plugin by the version the program's SDK asks for, with automatic plugin downloads off."""
    kind, name = tool.plugin.split()
    if (PULUMI_HOME / "plugins" / f"{kind}-{name}-v{tool.version}" / f"pulumi-{kind}-{name}").exists():
        return
    (binary,) = tool.binaries().values()
    _quiet(f"installing {binary.name} {tool.version} as a Pulumi plugin", f"setup-plugin-{name}.log",
           [[str(BIN / "pulumi"), "plugin", "install", kind, name, tool.version, "--file", str(binary)]], tool_env())


def _plugin_version(kind: str, name: str) -> list[str]:
    """A command printing the installed version of a Pulumi plugin (what doctor checks)."""
    script = ("import json, subprocess, sys; found = [p['version'] for p in json.loads(subprocess.run("
              "['pulumi', 'plugin', 'ls', '--json'], capture_output=True, text=True, check=True).stdout or '[]') "
              f"if (p['kind'], p['name']) == ({kind!r}, {name!r})]; print(max(found)) if found else sys.exit(1)")
    return [sys.executable, "-c", script]


def ensure_kubernetes_releases() -> None:
    """Every Kubernetes version the stacks name, its control plane and kubelet side by side in
    KUBERNETES_RELEASES/<version>/ (what the cluster playbook installs for a cluster of that version)."""
    for version in kubernetes_versions():
        release = KUBERNETES_RELEASES / version
        release.mkdir(parents=True, exist_ok=True)
        for tool in (kubernetes(version), kubernetes(version, node=True)):
            _build(tool)
            for out, target in tool.binaries().items():
                _link(target, release / out)


def go_module_dir(module: str, version: str) -> Path:
    return Path(download(module, version, HOME)["Dir"])


def _link(target: Path, link: Path) -> None:
    """Hard link, so a binary's own directory is BIN: pulumi finds its language host next to itself and
    the language host finds the SDK's exec script next to itself (symlinks resolve to the cache)."""
    if link.exists() and not link.is_symlink() and link.stat().st_ino == target.stat().st_ino:
        return
    link.unlink(missing_ok=True)
    try:
        link.hardlink_to(target)
    except OSError:  # another filesystem: copy
        shutil.copy2(target, link)


# --- doctor ----------------------------------------------------------------------------------

def _version_of(cmd: list[str], env: dict[str, str] | None = None) -> str | None:
    try:
        # Generous: checkov's --version imports its whole rule set (~3 s idle, 20 s and more on a loaded machine).
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"v?(\d+\.\d+(?:\.\d+)?)", out.stdout + out.stderr)
    return match.group(1) if match and out.returncode == 0 else None


@dataclass
class Check:
    name: str
    command: list[str]
    expected: str | None = None  # exact version required, if any


def checks() -> list[Check]:
    sdk = _installed_sdk_version()
    return [
        Check("pulumi", ["pulumi", "version"], sdk),
        Check("pulumi-language-python", ["pulumi-language-python", "--version"], sdk),
        Check("pulumi python sdk", [str(VENV / "bin" / "python"), "-c",
                                    "import importlib.metadata as m; print(m.version('pulumi'))"],
              pins.PULUMI),
        Check("pulumi-resource-kubernetes", _plugin_version("resource", "kubernetes"), pins.PULUMI_KUBERNETES),
        Check("helm", ["helm", "version", "--short"], pins.HELM),
        Check("kube-apiserver", ["kube-apiserver", "--version"], pins.KUBERNETES),
        Check("kube-controller-manager", ["kube-controller-manager", "--version"], pins.KUBERNETES),
        Check("kube-scheduler", ["kube-scheduler", "--version"], pins.KUBERNETES),
        Check("kubelet", ["kubelet", "--version"], pins.KUBERNETES),
        Check("kube-proxy", ["kube-proxy", "--version"], pins.KUBERNETES),
        Check("coredns", ["coredns", "-version"], pins.COREDNS),
        Check("local-path-provisioner", ["local-path-provisioner", "--version"], pins.LOCAL_PATH_PROVISIONER),
        Check("blackbox_exporter", ["blackbox_exporter", "--version"], pins.BLACKBOX_EXPORTER),
        *(Check(f"stacks: {binary} {v}", [str(KUBERNETES_RELEASES / v / binary), "--version"], v)
          for v in kubernetes_versions() for binary in ("kube-apiserver", *NODE_BINARIES)),
        Check("kubectl", ["kubectl", "version", "--client"]),
        Check("etcd", ["etcd", "--version"]),
        Check("prometheus", ["prometheus", "--version"]),
        Check("promtool", ["promtool", "--version"]),
        Check("alertmanager", ["prometheus-alertmanager", "--version"]),
        Check("podman", ["podman", "--version"]),
        Check("runc", ["runc", "--version"]),
        Check("weed (S3)", ["weed", "version"]),
        Check("ansible", ["ansible", "--version"]),
        Check("checkov", ["checkov", "--version"]),
        Check("lynis", ["lynis", "show", "version"]),
        Check("wireguard", ["wg", "--version"]),
        Check("nftables", ["nft", "--version"]),
        Check("go", ["go", "version"]),
    ]


def _installed_sdk_version() -> str | None:
    python = VENV / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('pulumi'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or None


def doctor() -> int:
    env = tool_env()
    failed = []
    print(f"{'tool':32} {'version':14} status")
    for check in checks():
        cmd = [shutil.which(check.command[0], path=env["PATH"]) or check.command[0], *check.command[1:]]
        version = _version_of(cmd, env)
        if version is None:
            status = "MISSING (run `make setup`)"
        elif check.expected and version != check.expected:
            status = f"WRONG VERSION (want {check.expected}; run `make setup`)"
        else:
            status = "ok"
        if status != "ok":
            failed.append(check.name)
        print(f"{check.name:32} {version or '-':14} {status}")
    if failed:
        print(f"doctor: not ready: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def setup() -> int:
    t0 = time.monotonic()
    HOME.mkdir(parents=True, exist_ok=True)
    step("Debian packages")
    ensure_debian_packages()
    step("Python virtualenv (.venv) with the pinned dependencies of pyproject.toml")
    ensure_venv()
    ensure_isolated_python_tools()
    step(f"Go-built tools into {HOME}")
    ensure_go_tools()
    ensure_kubernetes_releases()
    log(f"setup done in {time.monotonic() - t0:.1f}s")
    return doctor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolchain", description=__doc__)
    parser.add_argument("command", choices=["setup", "doctor"])
    args = parser.parse_args(argv)
    return setup() if args.command == "setup" else doctor()


if __name__ == "__main__":
    sys.exit(main())
