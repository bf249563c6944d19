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


def test_setup_builds_every_kubernetes_version_the_stacks_name(tmp_path, monkeypatch):
    import toolchain.__main__ as setup

    stack = tmp_path / "other.yaml"
    stack.write_text("clusters:\n  - {name: a, kubernetes_version: 1.34.2}\n  - name: b\n"
                     "    kubernetes_version: '1.9.11'\n")
    monkeypatch.setattr(setup, "STACK_FILES", [*setup.STACK_FILES, stack])
    versions = setup.kubernetes_versions()
    assert versions == sorted({setup.pins.KUBERNETES, "1.34.2", "1.9.11"}, key=lambda v: [int(x) for x in v.split(".")])
    assert versions[0] == "1.9.11"  # ordered as versions, not as strings
    tool = setup.kubernetes("1.34.2", node=True)
    assert tool.binaries() == {b: setup.HOME / "tools" / "kubernetes-node" / "1.34.2" / "bin" / b
                               for b in ("kubelet", "kube-proxy")}
    assert "-X k8s.io/component-base/version.gitVersion=v1.34.2" in tool.ldflags
    assert tool.local_replacement_version("k8s.io/api") == "v0.34.2"
