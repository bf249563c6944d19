"""Lint gates of the test command: every linter over every file of its kind, one test each."""

import os
import subprocess
from pathlib import Path

import pytest

from infra.automation import LAB_PASSPHRASE
from tests.conftest import require_tool
from toolchain import REPO

CHARTS = sorted(p.parent for p in (REPO / "charts").glob("*/Chart.yaml"))
# Charts with required values are linted with each of their CI values files (charts/<c>/ci/*.yaml).
CHART_VALUES = [(c, v) for c in CHARTS for v in (sorted((c / "ci").glob("*.yaml")) or [None])]
RULE_FILES = sorted((REPO / "monitoring" / "prometheus" / "rules").glob("*.yml"))


def run(cmd: list[str], cwd: Path = REPO, env: dict[str, str] | None = None) -> None:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"


def test_ruff():
    run([require_tool("ruff"), "check", "."])


def test_yamllint():
    run([require_tool("yamllint"), "--strict", "."])


def test_ansible_lint():
    run([require_tool("ansible-lint"), "--offline", "playbooks/"])


def test_there_are_charts_and_rules():
    # The parametrised gates below would silently vanish if these globs found nothing.
    assert CHARTS and RULE_FILES


@pytest.mark.tools
@pytest.mark.parametrize(("chart", "values"), CHART_VALUES,
                         ids=[f"{c.name}-{v.stem if v else 'defaults'}" for c, v in CHART_VALUES])
def test_helm_lint(chart, values):
    run([require_tool("helm"), "lint", "--strict", str(chart), *(["-f", str(values)] if values else [])])


@pytest.mark.tools
@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(rules):
    run([require_tool("promtool"), "check", "rules", str(rules)])


@pytest.mark.tools
@pytest.mark.lab  # the lab stack's config names the lab hardware's SSH key and S3 identities, made by `make lab`
def test_pulumi_preview_lab_stack_with_policy_pack(tmp_path):
    """`pulumi preview` of the committed lab stack, as a platform engineer runs it, policy pack included."""
    pulumi = require_tool("pulumi")
    env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{tmp_path}", "PULUMI_CONFIG_PASSPHRASE": LAB_PASSPHRASE}
    run([pulumi, "stack", "init", "lab", "--non-interactive"], env=env)
    run([pulumi, "preview", "--stack", "lab", "--non-interactive", "--policy-pack", "policies/pack"], env=env)
    assert not subprocess.run(["git", "status", "--porcelain", "Pulumi.lab.yaml"], cwd=REPO,
                              capture_output=True, text=True).stdout, "preview must not rewrite Pulumi.lab.yaml"
