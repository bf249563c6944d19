"""Unit tests of the toolchain set-up logic (no builds)."""

import subprocess
import sys

from toolchain import REPO
from toolchain.gobuild import parse_replaces

GOMOD = """module k8s.io/kubernetes

go 1.24.0

require k8s.io/api v0.0.0

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver v0.0.0 => ./staging/src/k8s.io/apiserver // pinned
)

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
"""


def test_parse_replaces_block_and_single_line():
    assert parse_replaces(GOMOD) == [
        ("k8s.io/api", "./staging/src/k8s.io/api", None),
        ("k8s.io/apiserver", "./staging/src/k8s.io/apiserver", None),
        ("github.com/atotto/clipboard", "github.com/tgummerer/clipboard",
         "v0.0.0-20241001131231-d02d263e614e"),
    ]


def test_doctor_names_what_is_missing(tmp_path):
    # An empty PATH and cache: doctor must fail and name the missing tools and the fix.
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "SOVCLOUD_HOME": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "toolchain", "doctor"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "pulumi " in out.stdout and "MISSING (run `make setup`)" in out.stdout
    assert "not ready:" in out.stderr and "kube-apiserver" in out.stderr and "helm" in out.stderr
