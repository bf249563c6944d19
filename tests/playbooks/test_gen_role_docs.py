"""The roles' README variables tables match playbooks/gen_role_docs.py, which writes them from each role's
meta/argument_specs.yml and defaults/main.yml (no lab)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from playbooks.gen_role_docs import render_default
from toolchain import REPO

GEN = REPO / "playbooks" / "gen_role_docs.py"
ROLES = REPO / "playbooks" / "roles"


def gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GEN), *args], capture_output=True, text=True, timeout=60)


def test_readmes_are_current():
    proc = gen("--check")
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def role_copy(tmp_path):
    dst = tmp_path / "api_lb"
    shutil.copytree(ROLES / "api_lb", dst)
    return dst


def test_drift_is_detected_and_regenerated(role_copy):
    defaults = role_copy / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text().replace("api_lb_idle_timeout: 10m", "api_lb_idle_timeout: 30m", 1))
    proc = gen("--check", str(role_copy))
    assert proc.returncode == 1
    assert "README.md is stale" in proc.stderr
    assert gen(str(role_copy)).returncode == 0
    assert "| `api_lb_idle_timeout` | str | no | `30m` |" in (role_copy / "README.md").read_text()
    assert gen("--check", str(role_copy)).returncode == 0


def test_a_default_in_the_spec_fails(role_copy):
    spec = role_copy / "meta" / "argument_specs.yml"
    spec.write_text(spec.read_text().replace("      api_lb_idle_timeout:\n",
                                             "      api_lb_idle_timeout:\n        default: 10m\n", 1))
    proc = gen("--check", str(role_copy))
    assert proc.returncode == 1
    assert "api_lb.api_lb_idle_timeout: `default:` in meta/argument_specs.yml" in proc.stderr
    assert "belongs in defaults/main.yml" in proc.stderr


def test_an_undeclared_default_fails(role_copy):
    defaults = role_copy / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text() + "api_lb_sneaky: 1\n")
    proc = gen("--check", str(role_copy))
    assert proc.returncode == 1
    assert "api_lb.api_lb_sneaky: in defaults/main.yml but not in meta/argument_specs.yml" in proc.stderr


def test_a_readme_without_markers_fails(role_copy):
    readme = role_copy / "README.md"
    readme.write_text(readme.read_text().replace("<!-- variables:end -->", ""))
    proc = gen("--check", str(role_copy))
    assert proc.returncode == 1
    assert "add the marker lines" in proc.stderr


@pytest.mark.parametrize(("value", "shown"), [
    ("027", '"027"'),  # plain 027 would read as an int
    ("yes", '"yes"'),  # ... and plain yes as true
    ("", '""'),
    ("10m", "10m"),
    ("{{ site | replace('-', '_') }}", "\"{{ site | replace('-', '_') }}\""),
    ("two\nlines\n", '"two\\nlines\\n"'),  # one line, escaped
    (2147483648, "2147483648"),
    (False, "false"),
    (None, "null"),
    ([], "[]"),
    (["a b", "c,d", "#e"], '[a b, "c,d", "#e"]'),
    ({"deny": 5, "k.v": "x: y"}, '{deny: 5, k.v: "x: y"}'),
])
def test_a_default_reads_back_as_itself(value, shown):
    assert render_default(value) == shown
    assert yaml.safe_load(shown) == value


@pytest.mark.parametrize("value", ["x" * 81, list(range(40)), "has a `backtick`"])
def test_a_default_that_does_not_fit_a_cell_is_left_to_defaults_main(value):
    assert render_default(value) is None
