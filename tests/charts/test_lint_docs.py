"""`helm lint --strict` on every chart and CI values file; README values tables match the generator."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .conftest import CHARTS, TENANT, WORKLOAD, ci_values

GEN = CHARTS / "gen_docs.py"


@pytest.mark.tools
@pytest.mark.parametrize(
    "values", [*ci_values(TENANT), *ci_values(WORKLOAD)], ids=lambda p: f"{p.parent.parent.name}-{p.stem}"
)
def test_helm_lint_strict(helm, values):
    chart = values.parent.parent
    proc = helm.run("lint", "--strict", str(chart), "--values", str(values))
    assert "0 chart(s) failed" in proc.stdout


def gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GEN), *args], capture_output=True, text=True, timeout=60)


def test_readmes_are_current():
    proc = gen("--check")
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(params=["tenant", "workload"])
def chart_copy(request, tmp_path):
    dst = tmp_path / request.param
    shutil.copytree(CHARTS / request.param, dst)
    return dst


def test_drift_is_detected_and_regenerated(chart_copy):
    values = chart_copy / "values.yaml"
    values.write_text(values.read_text().replace("# -- Agency (tenant) short name", "# -- Agency name", 1))
    proc = gen("--check", str(chart_copy))
    assert proc.returncode == 1
    assert "README.md is stale" in proc.stderr
    assert gen(str(chart_copy)).returncode == 0
    assert '| `agency` | string | `""` | Agency name' in (chart_copy / "README.md").read_text()
    assert gen("--check", str(chart_copy)).returncode == 0


def test_undocumented_value_fails(chart_copy):
    values = chart_copy / "values.yaml"
    schema = chart_copy / "values.schema.json"
    values.write_text(values.read_text().replace('agency: ""', 'agency: ""\nsneaky: 1', 1))
    schema.write_text(
        schema.read_text().replace(
            '"properties": {\n    "agency"',
            '"properties": {\n    "sneaky": {"type": "integer"},\n    "agency"',
            1,
        )
    )
    proc = gen("--check", str(chart_copy))
    assert proc.returncode == 1
    assert "sneaky: no `# --` comment above it in values.yaml" in proc.stderr


def test_value_missing_from_schema_fails(chart_copy):
    values = chart_copy / "values.yaml"
    values.write_text(values.read_text() + "\n# -- Not in the schema.\nextra: true\n")
    proc = gen("--check", str(chart_copy))
    assert proc.returncode == 1
    assert "extra: in values.yaml but not in values.schema.json" in proc.stderr
