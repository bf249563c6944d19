"""checkov over every rendered manifest of both charts: zero failed checks, no skips.

checkov's pins conflict with the project venv, so `make setup` gives it a venv of its own.
Controls: SC-K8S-01, SC-K8S-02, SC-K8S-03, SC-NET-03.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import require_tool

from .conftest import TENANT, WORKLOAD, ci_values

pytestmark = pytest.mark.tools


@pytest.fixture(scope="module")
def checkov() -> str:
    # `make setup` installs checkov into its own venv (pins.ISOLATED_PYTHON_TOOLS) and links it into the
    # tool cache; missing means FAIL, never skip.
    return require_tool("checkov")


def scan(checkov: str, directory) -> dict:
    # --skip-download: no calls to the vendor's cloud (tests stay on loopback); checks are all local.
    proc = subprocess.run(
        [
            checkov,
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
            "--compact",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), f"checkov crashed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    (report,) = report if isinstance(report, list) else [report]
    return report


def test_rendered_charts_have_no_failed_checks(helm, checkov, tmp_path):
    for chart, namespace in ((TENANT, "sovcloud-tenants"), (WORKLOAD, "egov-prod")):
        for values in ci_values(chart):
            proc = helm.run("template", "r", str(chart), "--namespace", namespace, "--values", str(values))
            (tmp_path / f"{chart.name}-{values.stem}.yaml").write_text(proc.stdout)
    report = scan(checkov, tmp_path)
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['check_name']} @ {c['resource']} ({c['file_path']})"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["skipped"] == 0
    # Every rendered object was scanned (6 values files, dozens of objects each way).
    assert summary["resource_count"] >= 60, summary
    assert summary["passed"] >= 300, summary


BAD_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: default}
spec:
  hostNetwork: true
  containers:
    - name: c
      image: nginx:latest
      securityContext: {privileged: true, allowPrivilegeEscalation: true}
"""


def test_checkov_flags_an_insecure_pod(checkov, tmp_path):
    # Guards the test above: a checkov that scanned nothing or checked nothing would also report 0 failures.
    (tmp_path / "bad.yaml").write_text(BAD_POD)
    failed = {c["check_id"] for c in scan(checkov, tmp_path)["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_19", "CKV_K8S_14", "CKV_K8S_20"} <= failed, sorted(failed)
