"""Builds pinned Go tools from their modules into the versioned cache.

Upstream modules whose go.mod carries `replace` directives cannot be `go install`ed directly, so
each tool gets a wrapper module: local-path replacements (`k8s.io/api => ./staging/...`,
`pulumi/sdk/v3 => ../sdk`) become the published module at the matching version, and remote
replacements are copied as they are.
"""

from __future__ import annotations

import json
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

    @property
    def prefix(self) -> Path:
        return HOME / "tools" / self.name / self.version

    def binaries(self) -> dict[str, Path]:
        return {out: self.prefix / "bin" / out for out in self.commands}

    def is_built(self) -> bool:
        return all(path.exists() for path in self.binaries().values())


def _go(args: list[str], cwd: Path, out) -> None:
    """`go ARGS` in `cwd`; the command and everything it prints go to `out` (a log file, or None: the console)."""
    if out is not None:
        out.write(f"$ go {' '.join(args)}\n")
        out.flush()
    subprocess.run(["go", *args], cwd=cwd, check=True, stdout=out, stderr=out)


def upstream_replaces(module: str, version: str, cwd: Path) -> list[tuple[str, str, str | None]]:
    """(old, new, new_version) for every replace directive in the upstream go.mod."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout
    return parse_replaces(Path(json.loads(out)["GoMod"]).read_text())


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
        for old, new, new_version in upstream_replaces(tool.module, f"v{tool.version}", src):
            if new.startswith("."):
                if tool.local_replacement_version is None:
                    raise RuntimeError(f"{tool.name}: no published version known for {old} => {new}")
                lines.append(f"replace {old} => {old} {tool.local_replacement_version(old)}")
            else:
                lines.append(f"replace {old} => {new} {new_version or ''}".rstrip())
        (src / "go.mod").write_text("\n".join(lines) + "\n")
        _go(["get", *(f"{pkg}@v{tool.version}" for pkg in tool.commands.values())], src, out)

    for binary, pkg in tool.commands.items():
        target = "." if workdir != src and pkg == "." else pkg
        _go(["build", *flags, "-o", str(bindir / binary), target], workdir, out)
