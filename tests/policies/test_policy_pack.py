"""The Pulumi policy pack: each policy passes a compliant fixture and fails a non-compliant one, and
the real engine blocks a non-compliant preview."""

from types import SimpleNamespace

import pulumi
import pytest
from pulumi import automation as auto

from infra.providers import KubeObject
from policies.pack import rules
from toolchain import REPO

COMPONENT = "sovcloud:index:{}"
DYNAMIC = "pulumi-python:dynamic:Resource"


def args(resource_type, props, name="r"):
    return SimpleNamespace(resource_type=resource_type, props=props, name=name)


def deployment(limits):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "resources": {"limits": limits}}]}}}}


CASES = {
    "data-residency": (args(COMPONENT.format("Site"), {"country": "KZ"}),
                       args(COMPONENT.format("Site"), {"country": "DE"})),
    "gateway-only-exposure": (
        args(DYNAMIC, {"manifest": {"kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}}}),
        args(DYNAMIC, {"manifest": {"kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}}}),
    ),
    "tls-min-1-2": (args(COMPONENT.format("InternetAccessGateway"), {"tls_min_version": "1.3"}),
                    args(COMPONENT.format("InternetAccessGateway"), {"tls_min_version": "1.1"})),
    "ha-rack-spread": (args(COMPONENT.format("KubernetesCluster"), {"control_plane_racks": ["r1", "r2", "r3"]}),
                       args(COMPONENT.format("KubernetesCluster"), {"control_plane_racks": ["r1", "r1", "r2"]})),
    "encryption-at-rest": (
        args(COMPONENT.format("KubernetesCluster"), {"control_plane_racks": [], "secrets_encryption": "aescbc"}),
        args(COMPONENT.format("KubernetesCluster"), {"control_plane_racks": [], "secrets_encryption": "identity"}),
    ),
    "transport-encrypted": (
        args(COMPONENT.format("TransportNetwork"), {"links": [{"a": "x", "b": "y", "tunnel": "wireguard"}]}),
        args(COMPONENT.format("TransportNetwork"), {"links": [{"a": "x", "b": "y", "tunnel": "none"}]}),
    ),
    "pod-resource-limits": (args(DYNAMIC, {"manifest": deployment({"cpu": "1", "memory": "1Gi"})}),
                            args(DYNAMIC, {"manifest": deployment({"cpu": "1"})})),
}


def test_every_policy_has_fixtures_and_controls():
    assert {p.name for p in rules.POLICIES} == set(CASES)
    assert all(p.controls and p.description.startswith("[SC-") for p in rules.POLICIES)


@pytest.mark.parametrize("policy", rules.POLICIES, ids=lambda p: p.name)
def test_policy_passes_compliant_and_fails_non_compliant(policy):
    good, bad = CASES[policy.name]
    violations: list[str] = []
    policy.validate(good, lambda msg, urn=None: violations.append(msg))
    assert violations == []
    policy.validate(bad, lambda msg, urn=None: violations.append(msg))
    assert len(violations) == 1


@pytest.mark.tools
def test_engine_blocks_a_non_compliant_preview(tmp_path):
    """A LoadBalancer Service declared by a program is refused by the mandatory pack in a real preview."""

    def program():
        KubeObject("public-lb", "kubeconfig-not-needed-in-preview", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "portal", "namespace": "egov-prod"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]}})
        pulumi.export("ok", True)

    backend = tmp_path / "state"
    backend.mkdir()
    opts = auto.LocalWorkspaceOptions(
        work_dir=str(tmp_path),
        project_settings=auto.ProjectSettings(name="sovcloud-policy", runtime="python",
                                              backend=auto.ProjectBackend(f"file://{backend}")),
        secrets_provider="passphrase", env_vars={"PULUMI_CONFIG_PASSPHRASE": "policy-test"})
    stack = auto.create_stack("policy", project_name="sovcloud-policy", program=program, opts=opts)
    with pytest.raises(auto.errors.CommandError) as exc:
        stack.preview(policy_packs=[str(REPO / "policies" / "pack")])
    assert "gateway-only-exposure" in str(exc.value) and "mandatory" in str(exc.value)
