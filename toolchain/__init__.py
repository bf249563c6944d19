"""Brings a machine to a working sovcloud toolchain and reports on it (`python -m toolchain`).

Stdlib only: it runs before the project's virtualenv exists.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The versioned cache of built tools lives outside the repo so fresh clones reuse it.
HOME = Path(os.environ.get("SOVCLOUD_HOME", Path.home() / ".cache" / "sovcloud"))
BIN = HOME / "bin"
PULUMI_HOME = HOME / "pulumi-home"
VENV = REPO / ".venv"


def tool_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment in which every project tool resolves from the cache and the venv."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(BIN), str(VENV / "bin"), env.get("PATH", "")])
    env.setdefault("PULUMI_HOME", str(PULUMI_HOME))
    env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
    env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
    return env
