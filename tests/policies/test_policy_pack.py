"""The Pulumi policy pack: each policy passes a compliant fixture and fails a non-compliant one, and
the real engine blocks a non-compliant preview."""

from types import SimpleNamespace

import pulumi
import pulumi_kubernetes as kubernetes
import pytest
import yaml
from pulumi import automation as auto

from infra import components, kube
from infra import config as cfg
from infra.program import build
from policies.pack import rules
from tests.conftest import require_tool
from tests.infra.conftest import lab_data
from toolchain import REPO, pins

COMPONENT = "sovcloud:index:{}"
SERVICE = "kubernetes:core/v1:Service"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def args(resource_type, props, name="r"):
    return SimpleNamespace(resource_type=resource_type, props=props, name=name)


def deployment(limits):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "resources": {"limits": limits}}]}}}}


def stack(*resources):
    """A stack policy's arguments: every resource of the stack."""
    return SimpleNamespace(resources=list(resources))


def site(name="dc-a", city="Astana", tier="III", min_sites=2, store=True):
    return args(COMPONENT.format("Site"), {"tier": tier, "city": city, "min_sites": min_sites, "backup_store": store},
                name=name)


def cluster(site_name):
    return args(COMPONENT.format("KubernetesCluster"), {"site": site_name}, name=site_name)


CASES = {
    # The allowed countries are the stack's, carried by the Site: the same country passes or fails with them.
    "data-residency": (args(COMPONENT.format("Site"), {"country": "UZ", "allowed_countries": ["KZ", "UZ"]}),
                       args(COMPONENT.format("Site"), {"country": "UZ", "allowed_countries": ["KZ"]})),
    "gateway-only-exposure": (
        args(SERVICE, {"metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}}),
        args(SERVICE, {"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}}),
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
    "pod-resource-limits": (args(DEPLOYMENT, deployment({"cpu": "1", "memory": "1Gi"})),
                            args(DEPLOYMENT, deployment({"cpu": "1"}))),
    "tier3-sites": (stack(site("dc-a", "Astana"), site("dc-b", "Almaty", tier="IV")),
                    stack(site("dc-a", "Astana"), site("dc-b", "Astana"))),
    "egress-named-hosts": (args(COMPONENT.format("InternetAccessGateway"), {"allowed_egress": ["pki.gov.kz"]}),
                           args(COMPONENT.format("InternetAccessGateway"), {"allowed_egress": ["*.kz"]})),
    "gateway-only-edge": (
        args(COMPONENT.format("Site"), {"nodes": [{"name": "gw", "role": "gateway", "public_address": "203.0.113.1"}]}),
        args(COMPONENT.format("Site"), {"nodes": [{"name": "w", "role": "worker", "public_address": "203.0.113.1"}]}),
    ),
    "transport-joins-all-sites": (
        args(COMPONENT.format("TransportNetwork"), {"sites": ["x", "y"], "links": [{"a": "x", "b": "y"}]}),
        args(COMPONENT.format("TransportNetwork"), {"sites": ["x", "y", "z"], "links": [{"a": "x", "b": "y"}]}),
    ),
    "secret-data-unpublished": (
        args(COMPONENT.format("Tenant"), {"data_classification": "secret", "routes": []}),
        args(COMPONENT.format("Tenant"), {"data_classification": "secret", "routes": [{"host": "a.gov.kz"}]}),
    ),
    "backups-on-another-site": (stack(site("dc-a"), site("dc-b", "Almaty"), cluster("dc-a")),
                                stack(site("dc-a"), site("dc-b", "Almaty", store=False), site("dc-c", "Shymkent"),
                                      cluster("dc-b"))),
    "kubernetes-supported": (args(COMPONENT.format("KubernetesCluster"), {"kubernetes_version": pins.KUBERNETES}),
                             args(COMPONENT.format("KubernetesCluster"), {"kubernetes_version": "1.29.0"})),
    "etcd-odd-members": (args(COMPONENT.format("KubernetesCluster"), {"control_plane_racks": list("abc")}),
                         args(COMPONENT.format("KubernetesCluster"), {"control_plane_racks": list("abcd")})),
    "certificate-rotation": (args(COMPONENT.format("Pki"), {"cert_rotate_before_days": 30, "cert_validity_days": 365}),
                             args(COMPONENT.format("Pki"), {"cert_rotate_before_days": 30, "cert_validity_days": 30})),
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


# The same rules on pulumi_kubernetes' typed resources: the kind comes from the type token, a Patch counts as its
# kind, and a field left unset may arrive as None. (policy, type, object, violations expected)
TYPED_CASES = [
    ("gateway-only-exposure", "kubernetes:core/v1:Service", {"metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}},
     0),
    ("gateway-only-exposure", "kubernetes:core/v1:Service", {"metadata": {"name": "s"},
                                                             "spec": {"type": "LoadBalancer"}}, 1),
    ("gateway-only-exposure", "kubernetes:core/v1:ServicePatch", {"metadata": {"name": "s"},
                                                                  "spec": {"type": "NodePort"}}, 1),
    ("gateway-only-exposure", "kubernetes:core/v1:Service", {"metadata": None, "spec": None}, 0),
    ("gateway-only-exposure", "kubernetes:networking.k8s.io/v1:Ingress", {"metadata": {"name": "i"}, "spec": None}, 1),
    ("gateway-only-exposure", "kubernetes:core/v1:ConfigMap", {"metadata": {"name": "c"}, "data": {"type": "x"}}, 0),
    ("pod-resource-limits", "kubernetes:apps/v1:Deployment", deployment({"cpu": "1", "memory": "1Gi"}), 0),
    ("pod-resource-limits", "kubernetes:apps/v1:Deployment", deployment({"cpu": "1"}), 1),
    ("pod-resource-limits", "kubernetes:apps/v1:StatefulSet", {"metadata": {"name": "db"}, "spec": None}, 0),
    ("pod-resource-limits", "kubernetes:batch/v1:CronJob", {"metadata": {"name": "j"}, "spec": {"jobTemplate": {
        "spec": {"template": {"spec": {"containers": [{"name": "c", "resources": None}]}}}}}}, 1),
]


@pytest.mark.parametrize(("policy", "type_", "obj", "expected"), TYPED_CASES,
                         ids=[f"{c[0]}-{c[1].rsplit(':', 1)[1]}-{c[3]}" for c in TYPED_CASES])
def test_policy_reads_typed_kubernetes_resources(policy, type_, obj, expected):
    (rule,) = [p for p in rules.POLICIES if p.name == policy]
    violations: list[str] = []
    rule.validate(args(type_, obj, name="generated"), lambda msg, urn=None: violations.append(msg))
    assert len(violations) == expected, violations


def _preview(tmp_path, program) -> None:
    """A real preview of `program` with the mandatory pack (local file backend, no network)."""
    backend = tmp_path / "state"
    backend.mkdir(exist_ok=True)
    opts = auto.LocalWorkspaceOptions(
        work_dir=str(tmp_path),
        project_settings=auto.ProjectSettings(name="sovcloud-policy", runtime="python",
                                              backend=auto.ProjectBackend(f"file://{backend}")),
        secrets_provider="passphrase", env_vars={"PULUMI_CONFIG_PASSPHRASE": "policy-test"})
    stack = auto.create_or_select_stack("policy", project_name="sovcloud-policy", program=program, opts=opts)
    stack.preview(policy_packs=[str(REPO / "policies" / "pack")])


def _service(service_type: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "portal", "namespace": "egov-prod"},
            "spec": {"type": service_type, "ports": [{"port": 443}]}}


def _declare(how: str, service_type: str, tmp_path):
    """A program declaring one Service of `service_type` the way `how` says."""
    def program():
        # Rendering to a directory needs no cluster: the provider plugin make setup builds, offline.
        provider = kubernetes.Provider("render", render_yaml_to_directory=str(tmp_path / "rendered"))
        opts = pulumi.ResourceOptions(provider=provider)
        if how == "Service":  # as the stack declares its objects
            kube.apply("portal", _service(service_type), provider)
        else:  # a Helm chart's child, as the agencies' charts are deployed
            chart = tmp_path / "chart"
            (chart / "templates").mkdir(parents=True, exist_ok=True)
            (chart / "Chart.yaml").write_text("apiVersion: v2\nname: portal\nversion: 0.1.0\n")
            (chart / "templates" / "service.yaml").write_text(yaml.safe_dump(_service(service_type)).replace(
                service_type, "{{ .Values.type }}"))
            kubernetes.helm.v4.Chart("portal", chart=str(chart), values={"type": service_type}, opts=opts)
    return program


@pytest.mark.tools
@pytest.mark.parametrize("how", ["Service", "Chart"])
def test_engine_blocks_a_public_service_at_preview_and_passes_a_cluster_internal_one(tmp_path, how):
    """A LoadBalancer Service declared by a program is refused by the mandatory pack in a real preview, whether
    declared by itself or by a Helm chart; the same program with a ClusterIP Service previews (the positive control)."""
    require_tool("pulumi")
    _preview(tmp_path, _declare(how, "ClusterIP", tmp_path))
    with pytest.raises(auto.errors.CommandError) as exc:
        _preview(tmp_path, _declare(how, "LoadBalancer", tmp_path))
    assert "gateway-only-exposure" in str(exc.value) and "mandatory" in str(exc.value)
    assert "Service portal: a Service of type LoadBalancer bypasses the gateway" in str(exc.value)


def _sites(allowed_countries: list[str]):
    """A program declaring the lab stack's sites, moved to Uzbekistan, with the stack's allowed countries."""
    def program():
        for data in lab_data()["sites"]:
            components.Site(cfg.Site.model_validate({**data, "country": "UZ"}), allowed_countries=allowed_countries,
                            min_sites=2)
    return program


@pytest.mark.tools
@pytest.mark.control("SC-DATA-01")
def test_engine_checks_residency_against_the_stacks_allowed_countries(tmp_path):
    """The pack holds no country of its own: the sites' allowed countries (the stack's) decide, in a real preview."""
    require_tool("pulumi")
    _preview(tmp_path, _sites(["KZ", "UZ"]))
    with pytest.raises(auto.errors.CommandError) as exc:
        _preview(tmp_path, _sites(["KZ"]))
    assert "data-residency" in str(exc.value) and "mandatory" in str(exc.value)
    assert "site dc-astana: 'UZ' is outside the allowed countries ['KZ']" in str(exc.value)


def _lab_program():
    """The lab stack's own program, as `pulumi preview --stack lab` declares it without hosts."""
    def program():
        build(cfg.parse(lab_data()))
    return program


@pytest.mark.tools
def test_engine_passes_the_lab_stacks_program(tmp_path):
    """Every mandatory policy, stack policies included, over what the real program declares for the lab stack: the
    positive control of the rules walk (tests/policies/test_rules.py) in the real engine."""
    require_tool("pulumi")
    require_tool("helm")
    _preview(tmp_path, _lab_program())
