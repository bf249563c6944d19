"""The layers' boundaries (ARCHITECTURE.md): the product (what `pulumi up` deploys and what operators run) never
imports the lab (the stand-in hardware), the tests or the benchmarks, so a real inventory gets exactly what the lab
gets; the benchmarks never import the tests (what both need, e.g. a loopback S3 server, lives in lab/). Within
the product, common/ (the one config error) imports none of the other packages, and the node agents only the
standard library."""

import ast
import sys
from pathlib import Path

from toolchain import REPO

PRODUCT = ["common", "infra", "playbooks", "agents", "monitoring", "dr", "policies", "charts", "toolchain"]
FORBIDDEN = {"lab", "tests", "bench"}
# common/config.py ships to the nodes next to monitoring/ and dr/, whose venv has pydantic and pyyaml.
CONFIG_MAY_IMPORT = {"pydantic", "yaml"}


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def python_files(dirs: list[str]) -> list[Path]:
    return sorted(p for d in dirs for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts)


def crossings(files: list[Path], forbidden: set[str]) -> list[str]:
    return [f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{line}: imports {module}"
            for path in files for line, module in imports(path) if module.split(".")[0] in forbidden]


def test_product_never_imports_lab_tests_or_bench():
    files = python_files(PRODUCT)
    assert len(files) > 30  # the walk found the packages (a moved tree would check nothing)
    bad = crossings(files, FORBIDDEN)
    assert not bad, "\n".join(bad)


def test_common_imports_none_of_the_other_packages():
    files = python_files(["common"])
    assert REPO / "common" / "config.py" in files
    others = {*PRODUCT, *FORBIDDEN} - {"common"}
    bad = crossings(files, others)
    assert not bad, "\n".join(bad)


def test_the_config_error_needs_only_pydantic_and_pyyaml():
    config = REPO / "common" / "config.py"
    third_party = [f"{config.relative_to(REPO)}:{line}: imports {module}" for line, module in imports(config)
                   if module.split(".")[0] not in {*sys.stdlib_module_names, *CONFIG_MAY_IMPORT}]
    assert not third_party, "\n".join(third_party)


def test_agents_use_only_the_standard_library():
    # They run on the node's own Python, without the venv: not even common/ (it needs pydantic).
    files = python_files(["agents"])
    assert files
    bad = [f"{path.relative_to(REPO)}:{line}: imports {module}" for path in files for line, module in imports(path)
           if module.split(".")[0] not in {*sys.stdlib_module_names, "agents"}]
    assert not bad, "\n".join(bad)


def test_the_control_rules_use_only_the_standard_library():
    # policies/rules.py ships to the DR stations next to common/ and dr/ (monitoring_exporters role): one copy of
    # each rule for the stack config, the policy pack, the lab and the DR config.
    rules = REPO / "policies" / "rules.py"
    bad = [f"{rules.relative_to(REPO)}:{line}: imports {module}" for line, module in imports(rules)
           if module.split(".")[0] not in sys.stdlib_module_names]
    assert not bad, "\n".join(bad)


def test_benchmarks_never_import_the_tests():
    files = python_files(["bench"])
    assert len(files) > 5
    bad = crossings(files, {"tests"})
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_function_level_import(tmp_path):
    # Positive control: the kind of import the product once had (dr/runbook.py reached into lab/ inside a method).
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from lab.nodes import ssh_args\n    import bench.x\n")
    assert [m for _, m in imports(sample)] == ["lab.nodes", "bench.x"]
    assert crossings([sample], {"bench"}) == [f"{sample}:3: imports bench.x"]
