"""Rendering helpers for the chart tests: real `helm template`, parsed into Python objects."""

from __future__ import annotations

import os
import subprocess
import time
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


# --- helpers of the lab tests (a real cluster) ---------------------------------------------------------------

def kubectl(kubeconfig: str, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """kubectl against `kubeconfig`; check=True fails the test on a non-zero exit."""
    r = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args], input=input, capture_output=True, text=True,
                       timeout=timeout)
    assert not check or r.returncode == 0, r.stderr
    return r


def eventually(fn, want, seconds: float = 30):
    """Poll `fn` until it returns `want` (bounded); what it returned last."""
    deadline = time.monotonic() + seconds
    while (got := fn()) != want and time.monotonic() < deadline:
        time.sleep(1)
    return got


def allow_between(source_ns: str, target_ns: str, port: int, name: str,
                  target_pods: dict[str, str] | None = None) -> list[dict]:
    """The two NetworkPolicies that let `source_ns`'s pods reach `target_ns`'s (all, or those labelled
    `target_pods`) on `port`: the target's ingress allow (named `name`) and the source's egress allow."""
    ns_peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": source_ns}}}
    to_peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": target_ns}}}
    return [
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": name, "namespace": target_ns},
         "spec": {"podSelector": {"matchLabels": target_pods} if target_pods else {}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [ns_peer], "ports": [{"protocol": "TCP", "port": port}]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": f"{name}-egress", "namespace": source_ns},
         "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [to_peer]}]}},
    ]
