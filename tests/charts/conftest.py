"""Rendering helpers for the chart tests: real `helm template`, parsed into Python objects."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
TENANT = CHARTS / "tenant"
WORKLOAD = CHARTS / "workload"


def ci_values(chart: Path) -> list[Path]:
    files = sorted((chart / "ci").glob("*.yaml"))
    assert files, f"{chart}/ci has no values files"
    return files


@dataclass
class Helm:
    path: str
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.path, *args], capture_output=True, text=True, env=self.env, timeout=120)
        if check and proc.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    @staticmethod
    def _args(chart: Path, values: list[Path], sets: dict[str, str], namespace: str) -> list[str]:
        args = [str(chart), "--namespace", namespace]
        for v in values:
            args += ["--values", str(v)]
        for k, v in sets.items():
            # None deletes the key (helm's `null`); strings stay strings; the rest keeps its YAML type.
            text = "null" if v is None else str(v).lower() if isinstance(v, bool) else v
            args += ["--set-string" if isinstance(v, str) else "--set", f"{k}={text}"]
        return args

    def template(
        self,
        chart: Path,
        values: list[Path] = (),
        sets: dict | None = None,
        namespace: str = "sovcloud-test",
        release: str = "t",
    ) -> list[dict]:
        out = self.run("template", release, *self._args(chart, list(values), sets or {}, namespace)).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    def template_error(self, chart: Path, values: list[Path] = (), sets: dict | None = None) -> str:
        """stderr of a render that must fail; fails the test if it renders."""
        proc = self.run(
            "template", "t", *self._args(chart, list(values), sets or {}, "sovcloud-test"), check=False
        )
        assert proc.returncode != 0, f"render unexpectedly succeeded:\n{proc.stdout[:2000]}"
        return proc.stderr


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> Helm:
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    # Keep helm's config/cache/data out of the user's home and repo.
    env.update(
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_DATA_HOME=str(home / "data"),
    )
    return Helm(require_tool("helm"), env)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    found = [
        d
        for d in docs
        if d["kind"] == kind
        and d["metadata"]["name"] == name
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]
    assert len(found) == 1, f"expected one {kind}/{name} in {namespace}, found {len(found)}"
    return found[0]
