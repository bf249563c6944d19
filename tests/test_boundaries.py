"""The layers' boundary: the product (what `pulumi up` deploys and what operators run) never imports the lab
(the stand-in hardware), the tests or the benchmarks, so a real inventory gets exactly what the lab gets."""

import ast
from pathlib import Path

from toolchain import REPO

PRODUCT = ["infra", "playbooks", "agents", "monitoring", "dr", "policies", "charts", "toolchain"]
FORBIDDEN = {"lab", "tests", "bench"}


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def product_files() -> list[Path]:
    return sorted(p for d in PRODUCT for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts)


def test_product_never_imports_lab_tests_or_bench():
    files = product_files()
    assert len(files) > 30  # the walk found the packages (a moved tree would check nothing)
    bad = [f"{path.relative_to(REPO)}:{line}: imports {module}" for path in files for line, module in imports(path)
           if module.split(".")[0] in FORBIDDEN]
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_function_level_import(tmp_path):
    # Positive control: the kind of import the product once had (dr/runbook.py reached into lab/ inside a method).
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from lab.nodes import ssh_args\n    import bench.x\n")
    assert [m for _, m in imports(sample)] == ["lab.nodes", "bench.x"]
