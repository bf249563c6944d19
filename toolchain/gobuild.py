"""Builds pinned Go tools from their modules into the versioned cache.

Upstream modules whose go.mod carries `replace` directives cannot be `go install`ed directly, so
each tool gets a wrapper module: local-path replacements (`k8s.io/api => ./staging/...`,
`pulumi/sdk/v3 => ../sdk`) become the published module at the matching version, and remote
replacements are copied as they are.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import HOME

REPLACE_LINE = re.compile(r"^\s*(?:replace\s+)?(\S+)(?:\s+v\S+)?\s+=>\s+(\S+)(?:\s+(v\S+))?\s*$")


@dataclass
class GoTool:
    name: str
    version: str
    module: str  # upstream module path, or a directory of ours
    commands: dict[str, str]  # output binary name -> package import path
    ldflags: list[str] = field(default_factory=list)
    # For a local-path replacement of module M: the published version of M to use instead.
    local_replacement_version: Callable[[str], str] | None = None
    # Test binaries (`go test -c`): output name -> package import path (its test dependencies are fetched too).
    tests: dict[str, str] = field(default_factory=dict)
    # Modules pinned to another version than the upstream go.mod's (e.g. one the proxy refuses): module -> version.
    overrides: dict[str, str] = field(default_factory=dict)
    # More `go get` arguments (module@version) for commands of other modules built in the same wrapper.
    extra_modules: list[str] = field(default_factory=list)
    # Without cgo: a binary that runs alone in a container image (no libc there).
    static: bool = False
    # The module's version when it differs from the tool's (a pseudo-version where the proxy refuses the tag).
    module_version: str = ""
    # A main package of the module that needs `go generate` before it builds (its generated files are not in the
    # module zip): copied into the wrapper, generated there with generate_env, built as the command ".".
    main_package: str = ""
    generate_env: dict[str, str] = field(default_factory=dict)
    # A Pulumi plugin ("resource kubernetes"): installed into PULUMI_HOME by version, not put on PATH.
    plugin: str = ""

    @property
    def module_ref(self) -> str:
        return self.module_version or f"v{self.version}"

    @property
    def prefix(self) -> Path:
        return HOME / "tools" / self.name / self.version

    def binaries(self) -> dict[str, Path]:
        return {out: self.prefix / "bin" / out for out in [*self.commands, *self.tests]}

    def is_built(self) -> bool:
        return all(path.exists() for path in self.binaries().values())


def _go(args: list[str], cwd: Path, out, env: dict[str, str] | None = None) -> None:
    """`go ARGS` in `cwd`; the command and everything it prints go to `out` (a log file, or None: the console)."""
    if out is not None:
        out.write(" ".join(["$", *(f"{k}={v}" for k, v in (env or {}).items()), "go", *args]) + "\n")
        out.flush()
    subprocess.run(["go", *args], cwd=cwd, check=True, stdout=out, stderr=out, env={**os.environ, **(env or {})})


def download(module: str, version: str, cwd: Path) -> dict:
    """`go mod download -json module@version`: where the module cache holds it (Dir, GoMod, ...)."""
    out = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"],
                         cwd=cwd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def upstream_replaces(module: str, version: str, cwd: Path) -> list[tuple[str, str, str | None]]:
    """(old, new, new_version) for every replace directive in the upstream go.mod."""
    return parse_replaces(Path(download(module, version, cwd)["GoMod"]).read_text())


def parse_replaces(gomod: str) -> list[tuple[str, str, str | None]]:
    replaces, in_block = [], False
    for line in gomod.splitlines():
        stripped = line.split("//")[0].strip()
        if stripped.startswith("replace ("):
            in_block = True
            continue
        if in_block and stripped == ")":
            in_block = False
            continue
        if in_block or stripped.startswith("replace "):
            match = REPLACE_LINE.match(stripped)
            if match:
                replaces.append(match.groups())
    return replaces


def _generate_main(tool: GoTool, src: Path, out) -> None:
    """The module's main package, copied into the wrapper `src` (the module cache is read-only) and generated."""
    package = Path(download(tool.module, tool.module_ref, src)["Dir"]) / tool.main_package
    for f in package.iterdir():
        if f.is_file():
            shutil.copyfile(f, src / f.name)  # copyfile: the copies are writable, unlike the cache's files
    # -mod=mod: the generator's own imports (build-tagged `ignore`, so not in the wrapper's go.sum yet) resolve
    # at the versions the module graph already selects.
    _go(["generate", "."], src, out, {**tool.generate_env, "GOFLAGS": "-mod=mod"})


def build(tool: GoTool, out=None) -> None:
    """Build `tool` into its cache prefix (no-op when already built); the Go commands print to `out`."""
    if tool.is_built():
        return
    src = HOME / "src" / tool.name / tool.version
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    bindir = tool.prefix / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    flags = ["-trimpath", "-ldflags", " ".join(["-s", "-w", *tool.ldflags])]

    if Path(tool.module).is_dir():  # one of ours: build in place
        workdir = Path(tool.module)
    else:
        workdir = src
        lines = [f"module sovcloud.local/toolchain/{tool.name}", "", "go 1.25", ""]
        (src / "go.mod").write_text("\n".join(lines))
        for old, new, new_version in upstream_replaces(tool.module, tool.module_ref, src):
            if old in tool.overrides:
                continue
            if new.startswith("."):
                if tool.local_replacement_version is None:
                    raise RuntimeError(f"{tool.name}: no published version known for {old} => {new}")
                lines.append(f"replace {old} => {old} {tool.local_replacement_version(old)}")
            else:
                lines.append(f"replace {old} => {new} {new_version or ''}".rstrip())
        lines += [f"replace {module} => {module} {version}" for module, version in tool.overrides.items()]
        (src / "go.mod").write_text("\n".join(lines) + "\n")
        own = [p for p in [*tool.commands.values(), *tool.tests.values()] if p != "." and not p.startswith(
            tuple(m.split("@")[0] for m in tool.extra_modules))]
        if tool.main_package:
            own.append(f"{tool.module}/{tool.main_package}")
        _go(["get", *(["-t"] if tool.tests else []), *(f"{pkg}@{tool.module_ref}" for pkg in own),
             *tool.extra_modules], src, out)
        if tool.main_package:
            _generate_main(tool, src, out)

    env = {"CGO_ENABLED": "0"} if tool.static else None
    for binary, pkg in tool.commands.items():
        target = "." if workdir != src and pkg == "." else pkg
        _go(["build", *flags, "-o", str(bindir / binary), target], workdir, out, env)
    for binary, pkg in tool.tests.items():
        # -vet=off: vet checks the sources we build, not ours (minutes on a test binary this size).
        _go(["test", "-c", "-vet=off", *flags, "-o", str(bindir / binary), pkg], workdir, out, env)
