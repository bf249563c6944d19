"""The README's main command on the default lab: `python -m lab up` brings up and deploys the whole
reference cloud, idempotently, and ends with a healthy status table."""

import json
import subprocess
import sys

import pytest

from infra.automation import committed_stack
from toolchain import REPO

pytestmark = [pytest.mark.lab, pytest.mark.tools]


def kubectl(kubeconfig: str, *args: str) -> str:
    return subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def test_both_sites_serve_kubernetes_with_the_tenant_platform(lab_deployment):
    for site, kubeconfig in lab_deployment["kubeconfigs"].items():
        namespaces = kubectl(kubeconfig, "get", "ns", "-o", "name").split()
        assert "namespace/egov-prod" in namespaces, site
        labels = json.loads(kubectl(kubeconfig, "get", "ns", "egov-prod", "-o", "json"))["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        policies = kubectl(kubeconfig, "get", "networkpolicy", "-n", "egov-prod", "-o", "name")
        assert "networkpolicy.networking.k8s.io/default-deny-all" in policies.split()


def test_second_lab_up_changes_nothing_and_reports_healthy(lab_deployment):
    out = subprocess.run([sys.executable, "-m", "lab", "up"], cwd=REPO, capture_output=True, text=True,
                         timeout=1500)
    # Exit 0 means every row of the closing status table (nodes, S3, both API endpoints) is healthy.
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    preview = committed_stack("lab").preview()
    assert set(preview.change_summary) == {"same"}, preview.change_summary
