"""Every control rule (policies/rules.py) at every layer that checks it: start from the valid lab stack, break
exactly one rule's setting, and exactly that control turns red in the stack config validation (naming the
field), in the policy pack (over what the real program declares) and in the stack's compliance summary (and the
lab's topology, for the rack spread); the unbroken lab stack is green everywhere."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pulumi
import pytest
import yaml

from infra import config as cfg
from infra.program import build, compliance_summary
from lab import config as lab_config
from policies import rules
from policies.pack import rules as pack
from tests.conftest import require_tool
from tests.infra.conftest import Mocks, lab_data

CONTROL = re.compile(r"\b(SC-[A-Z0-9]+-\d{2})\)")  # as each rule ends its message: "... (SC-NET-02)"


@dataclass(frozen=True)
class Case:
    """How to break one rule: in the stack file (`stack`, with the config field its error names), or, for a
    rule no stack setting decides, in what the program declares (`declared`)."""

    stack: Callable[[dict], Any] | None = None
    field: str | None = None
    declared: Callable[[list[SimpleNamespace]], Any] | None = None


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """A mutation setting `path` (dots and [i]) of the stack data to `value`."""
    *parents, last = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]

    def mutate(data: dict) -> None:
        for key in parents:
            data = data[key]
        data[last] = value
    return mutate


def _fourth_member(data: dict) -> None:
    site = data["sites"][0]
    site["racks"].append("r4")
    site["nodes"].append({"name": "astana-cp4", "role": "control-plane", "rack": "r4"})


def _secret_with_route(data: dict) -> None:
    tenant = data["tenants"][0]
    tenant["data_classification"] = "secret"
    tenant["chart_values"]["network"] = {"internetEgress": False}  # the chart's own rule for secret data
    tenant["chart_values"]["gateway"] = {"routes": [{"host": "files.egov.gov.kz", "namespace": "prod",
                                                     "service": "files", "port": 8080}]}


def _declare(resource_type: str, props: dict) -> Callable[[list[SimpleNamespace]], None]:
    return lambda declared: declared.append(SimpleNamespace(resource_type=resource_type, props=props, name="extra"))


def _unencrypted_secrets(declared: list[SimpleNamespace]) -> None:
    for r in declared:
        if r.resource_type == "sovcloud:index:KubernetesCluster":
            r.props = {**r.props, "secrets_encryption": "identity"}


# One case per rule of the registry (test_every_rule_has_a_case).
CASES = {
    "residency": Case(_set("sites[1].country", "DE"), "sites[1].country"),
    "rack_spread": Case(_set("sites[0].nodes[1].rack", "r1"), "clusters[0]"),
    "etcd_odd_members": Case(_fourth_member, "clusters[0]"),
    "tls_floor": Case(_set("gateway.tls_min_version", "1.1"), "gateway.tls_min_version"),
    "transport_encrypted": Case(_set("transport.links[0].tunnel", "none"), "transport.links[0].tunnel"),
    "site_tier": Case(_set("sites[1].tier", "II"), "sites[1].tier"),
    "site_count": Case(_set("min_sites", 3), "min_sites"),
    "egress_allow_list": Case(_set("gateway.allowed_egress[0]", "0.0.0.0/0"), "gateway.allowed_egress[0]"),
    "node_exposure": Case(_set("sites[0].nodes[3].public_address", "10.210.200.30"),
                          "sites[0].nodes[3].public_address"),
    "transport_joins_all": Case(_set("transport.links", []), "transport.links"),
    "classified_publishing": Case(_secret_with_route, "tenants[0].chart_values.gateway.routes"),
    "backup_stores": Case(lambda d: d["sites"][1].pop("s3_endpoint"), "sites[1].s3_endpoint"),
    "backup_replica": Case(lambda d: d["sites"][1].pop("s3_endpoint"), "sites"),
    "kubernetes_supported": Case(_set("clusters[0].kubernetes_version", "1.30.4"),
                                 "clusters[0].kubernetes_version"),
    "certificate_rotation": Case(_set("cert_rotate_before_days", 365), "cert_rotate_before_days"),
    # What no stack setting decides: the program's declared objects.
    "secrets_encryption": Case(declared=_unencrypted_secrets),
    "service_exposure": Case(declared=_declare("kubernetes:core/v1:Service", {
        "metadata": {"name": "portal"}, "spec": {"type": "NodePort"}})),
    "pod_limits": Case(declared=_declare("kubernetes:apps/v1:Deployment", {
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "resources": {"limits": {"cpu": "1"}}}]}}}})),
}


def test_every_rule_has_a_case():
    assert set(CASES) == set(rules.RULES), "a rule without a mutation case is checked nowhere here"
    assert {rules.RULES[name].control for name, c in CASES.items() if c.stack} == cfg.STACK_CONTROLS


def _config_controls(data: dict) -> dict[str, set[str]]:
    """field -> the control ids its problems name ({} when the stack parses)."""
    try:
        cfg.parse(data)
    except cfg.ConfigError as exc:
        found: dict[str, set[str]] = {}
        for field, message in exc.problems:
            found.setdefault(field, set()).update(CONTROL.findall(message) or {"(no control)"})
        return found
    return {}


class _AllMocks(Mocks):
    def __init__(self):
        super().__init__()
        self.declared: list[SimpleNamespace] = []

    def new_resource(self, args):
        self.declared.append(SimpleNamespace(resource_type=args.typ, props=dict(args.inputs), name=args.name))
        return super().new_resource(args)


def _declared(cloud: cfg.Cloud) -> list[SimpleNamespace]:
    """Every resource the real program declares for `cloud` (Pulumi mocks: no engine, no hosts)."""
    mocks = _AllMocks()
    pulumi.runtime.set_mocks(mocks, preview=False)

    @pulumi.runtime.test
    def run():
        build(cloud)

    run()
    return mocks.declared


def _pack_reports(declared: list[SimpleNamespace]) -> dict[str, list[str]]:
    """policy name -> what it reports over the declared resources."""
    reports: dict[str, list[str]] = {}
    for policy in pack.POLICIES:
        out = reports.setdefault(policy.name, [])
        targets = ([SimpleNamespace(resources=declared)] if isinstance(policy, pack.StackValidationPolicy)
                   else declared)
        for target in targets:
            policy.validate(target, lambda message, urn=None, out=out: out.append(message))
    return {name: found for name, found in reports.items() if found}


def _lab_controls(data: dict, tmp_path: Path) -> set[str]:
    """The control ids the lab topology's errors name when its machines follow `data` as the lab stack."""
    stack = tmp_path / "stack.yaml"
    stack.write_text(yaml.safe_dump(data))
    lab = yaml.safe_load(lab_config.DEFAULT_PATH.read_text())
    lab["sites_from"]["stack"] = str(stack)
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(lab))
    try:
        lab_config.load(tmp_path / "lab.yaml")
    except lab_config.ConfigError as exc:
        return set(CONTROL.findall(str(exc)))
    return set()


@pytest.fixture(scope="module")
def lab_declared() -> list[SimpleNamespace]:
    require_tool("helm")  # the tenants' chart is rendered
    return _declared(cfg.parse(lab_data()))


@pytest.mark.tools
def test_the_lab_stack_is_green_at_every_layer(lab_declared, tmp_path):
    data = lab_data()
    assert _config_controls(data) == {}
    assert cfg.rule_findings(cfg.parse(data)) == []
    assert set(compliance_summary(cfg.parse(data)).values()) == {"pass"}
    assert {r.resource_type for r in lab_declared} >= {f"sovcloud:index:{c}" for c in (
        "Pki", "Site", "KubernetesCluster", "InternetAccessGateway", "TransportNetwork", "Tenant")}
    assert _pack_reports(lab_declared) == {}
    assert _lab_controls(data, tmp_path) == set()


@pytest.mark.tools
@pytest.mark.parametrize("rule", sorted(CASES))
def test_breaking_one_rule_turns_exactly_its_control_red(rule, lab_declared, tmp_path):
    case, control = CASES[rule], rules.RULES[rule].control
    policies = {p.name for p in pack.POLICIES if control in p.controls}
    data = lab_data()
    if case.stack:
        case.stack(data)
        # The stack config: refused, the field named, and no other control's rule broken.
        found = _config_controls(data)
        assert case.field in found and found[case.field] == {control}, found
        assert set().union(*found.values()) == {control}, found
        # The compliance summary of the same (unrefused) description.
        summary = compliance_summary(cfg.describe(data))
        assert {c for c, result in summary.items() if result == "fail"} == {control}, summary
        declared = _declared(cfg.describe(data))
    else:
        # No stack setting decides it: the config and the summary do not check it, the pack does.
        assert _config_controls(data) == {} and set(compliance_summary(cfg.parse(data)).values()) == {"pass"}
        declared = copy.deepcopy(lab_declared)
        case.declared(declared)
    reported = _pack_reports(declared)
    assert set(reported) == policies, reported
    assert all(CONTROL.findall(m) == [control] for found in reported.values() for m in found), reported
    # The lab's topology checks the rack spread of the same machines, and only that.
    assert _lab_controls(data, tmp_path) == ({control} if rule == "rack_spread" else set())
