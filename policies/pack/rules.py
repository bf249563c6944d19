"""The sovcloud policy pack: run on every preview (`pulumi preview --policy-pack policies/pack`).

Defence in depth behind the stack-config validation: these check what the program actually declares,
whatever produced it, with the same rule predicates (policies/rules.py) over the components' properties. The
stack's own settings a rule needs (its allowed countries, its minimum of sites) reach the pack as properties
of the components too. Each policy's description starts with the control ids it enforces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies import rules
from toolchain import pins

POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def _is(args: ResourceValidationArgs, component: str) -> bool:
    return args.resource_type == f"sovcloud:index:{component}"


def _plain(value: Any) -> Any:
    """The engine hands props over as read-only proxies; policies work on plain dicts and lists."""
    if isinstance(value, str | bytes | int | float | bool) or value is None:
        return value
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value]


# A pulumi_kubernetes resource's type token names its object's kind: kubernetes:apps/v1:Deployment, and for a
# server-side-apply patch kubernetes:core/v1:ServicePatch (a patch can make a Service public just the same).
# A Helm chart's objects (helm.v4.Chart) reach the pack as such typed children.
_KUBERNETES_TYPE = re.compile(r"^kubernetes:[\w.-]+/\w+:(?P<kind>\w+?)(?:Patch)?$")


def _manifest(args: ResourceValidationArgs) -> dict[str, Any] | None:
    """The Kubernetes object a typed pulumi_kubernetes resource declares (its properties are the object)."""
    typed = _KUBERNETES_TYPE.match(args.resource_type)
    if not typed:
        return None
    manifest = _plain(args.props)
    return {**manifest, "kind": typed["kind"], "metadata": manifest.get("metadata") or {"name": args.name}}


def _name(manifest: dict[str, Any]) -> str:
    return f"{manifest['kind']} {manifest['metadata'].get('name', '(generated name)')}"


def _report(report, name: str, problems: Iterable[str]) -> None:
    for problem in problems:
        report(f"{name}: {problem}")


def data_residency(args: ResourceValidationArgs, report) -> None:
    if _is(args, "Site"):
        _report(report, f"site {args.name}", rules.residency(args.props.get("country"),
                                                             _plain(args.props.get("allowed_countries"))))


def gateway_only_exposure(args: ResourceValidationArgs, report) -> None:
    m = _manifest(args)
    if m is not None:
        _report(report, _name(m), rules.service_exposure(m["kind"], (m.get("spec") or {}).get("type")))


def tls_min_version(args: ResourceValidationArgs, report) -> None:
    if _is(args, "InternetAccessGateway"):
        _report(report, f"gateway {args.name}", rules.tls_floor(args.props.get("tls_min_version")))


def _racks(args: ResourceValidationArgs) -> list[str]:
    return _plain(args.props.get("control_plane_racks")) or []


def ha_rack_spread(args: ResourceValidationArgs, report) -> None:
    if _is(args, "KubernetesCluster"):
        _report(report, f"cluster {args.name}", rules.rack_spread(_racks(args)))


def etcd_odd_members(args: ResourceValidationArgs, report) -> None:
    if _is(args, "KubernetesCluster"):
        _report(report, f"cluster {args.name}", rules.etcd_odd_members(len(_racks(args))))


def kubernetes_supported(args: ResourceValidationArgs, report) -> None:
    if _is(args, "KubernetesCluster"):
        _report(report, f"cluster {args.name}",
                rules.kubernetes_supported(str(args.props.get("kubernetes_version")), pins.KUBERNETES))


def encryption_at_rest(args: ResourceValidationArgs, report) -> None:
    if _is(args, "KubernetesCluster"):
        _report(report, f"cluster {args.name}", rules.secrets_encryption(args.props.get("secrets_encryption")))


def transport_encrypted(args: ResourceValidationArgs, report) -> None:
    if _is(args, "TransportNetwork"):
        for link in _plain(args.props.get("links")) or []:
            _report(report, f"link {link.get('a')}-{link.get('b')}", rules.transport_encrypted(link.get("tunnel")))


def transport_joins_all_sites(args: ResourceValidationArgs, report) -> None:
    if _is(args, "TransportNetwork"):
        _report(report, f"transport {args.name}", rules.transport_joins_all(
            _plain(args.props.get("sites")) or [], _plain(args.props.get("links")) or []))


def egress_named_hosts(args: ResourceValidationArgs, report) -> None:
    if _is(args, "InternetAccessGateway"):
        _report(report, f"gateway {args.name}", rules.egress_allow_list(_plain(args.props.get("allowed_egress"))
                                                                         or []))


def gateway_only_edge(args: ResourceValidationArgs, report) -> None:
    if _is(args, "Site"):
        for node in _plain(args.props.get("nodes")) or []:
            _report(report, f"site {args.name} node {node.get('name')}", rules.node_exposure(
                node.get("role"), node.get("transport_address"), node.get("public_address")))


def secret_data_unpublished(args: ResourceValidationArgs, report) -> None:
    if _is(args, "Tenant"):
        _report(report, f"tenant {args.name}", rules.classified_publishing(
            args.props.get("data_classification"), _plain(args.props.get("routes")) or []))


def certificate_rotation(args: ResourceValidationArgs, report) -> None:
    if _is(args, "Pki"):
        _report(report, f"PKI {args.name}", rules.certificate_rotation(
            int(args.props.get("cert_rotate_before_days") or 0), int(args.props.get("cert_validity_days") or 0)))


def pod_resource_limits(args: ResourceValidationArgs, report) -> None:
    m = _manifest(args)
    if m is None or m["kind"] not in POD_TEMPLATE_KINDS | {"Pod", "CronJob"}:
        return
    # A typed resource may carry a field it leaves unset as None: `or {}` at each level.
    spec = m.get("spec") or {}
    if m["kind"] == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    pod = spec if m["kind"] == "Pod" else (spec.get("template") or {}).get("spec") or {}
    _report(report, _name(m), rules.pod_limits(pod))


def _of(args: StackValidationArgs, component: str) -> list[Any]:
    return [r for r in args.resources if _is(r, component)]


def tier3_sites(args: StackValidationArgs, report) -> None:
    sites = _of(args, "Site")
    for site in sites:
        _report(report, f"site {site.name}", rules.site_tier(site.props.get("tier")))
    # Every Site carries the stack's minimum (as it carries the allowed countries); a stack without a site has
    # nothing to deploy.
    minimum = max((int(s.props.get("min_sites") or 0) for s in sites), default=0)
    _report(report, "stack", rules.site_count([{"tier": s.props.get("tier"), "city": s.props.get("city")}
                                               for s in sites], minimum))


def backups_on_another_site(args: StackValidationArgs, report) -> None:
    stores = [s.name for s in _of(args, "Site") if s.props.get("backup_store")]
    cluster_sites = [c.props.get("site") for c in _of(args, "KubernetesCluster")]
    _report(report, "stack", rules.backup_stores(stores, cluster_sites) + rules.backup_replica(stores))


VALIDATORS: dict[str, Callable[..., None]] = {f.__name__.replace("_", "-"): f for f in (
    data_residency, gateway_only_exposure, tls_min_version, ha_rack_spread, encryption_at_rest, transport_encrypted,
    pod_resource_limits, tier3_sites, egress_named_hosts, gateway_only_edge, transport_joins_all_sites,
    secret_data_unpublished, backups_on_another_site, kubernetes_supported, etcd_odd_members, certificate_rotation)}
VALIDATORS["tls-min-1-2"] = VALIDATORS.pop("tls-min-version")
STACK_POLICIES = {"tier3-sites", "backups-on-another-site"}


def _policy(name: str) -> ResourceValidationPolicy | StackValidationPolicy:
    (rule, *_), controls = ([r for r in rules.RULES.values() if r.policy == name],
                            sorted({r.control for r in rules.RULES.values() if r.policy == name}))
    kind = StackValidationPolicy if name in STACK_POLICIES else ResourceValidationPolicy
    policy = kind(name=name, description=f"[{','.join(controls)}] {rule.what}", validate=VALIDATORS[name],
                  enforcement_level=EnforcementLevel.MANDATORY)
    policy.controls = controls
    return policy


# One policy per pack policy name of the rules' registry, in its order.
POLICIES = [_policy(name) for name in dict.fromkeys(r.policy for r in rules.RULES.values())]
