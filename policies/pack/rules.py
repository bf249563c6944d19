"""The sovcloud policy pack: run on every preview (`pulumi preview --policy-pack policies/pack`).

Defence in depth behind the stack-config validation: these check what the program actually declares,
whatever produced it. Each policy's description starts with the control ids it enforces.
"""

from __future__ import annotations

import re
from typing import Any

from pulumi_policy import EnforcementLevel, ResourceValidationArgs, ResourceValidationPolicy

ALLOWED_COUNTRIES = ("KZ",)
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
_TLS_ORDER = {"1.0": 0, "1.1": 1, "1.2": 2, "1.3": 3}


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


def data_residency(args: ResourceValidationArgs, report) -> None:
    if _is(args, "Site") and args.props.get("country") not in ALLOWED_COUNTRIES:
        report(f"site {args.name} is in {args.props.get('country')!r}; data must stay in {ALLOWED_COUNTRIES}")


def gateway_only_exposure(args: ResourceValidationArgs, report) -> None:
    m = _manifest(args)
    if m is None:
        return
    if m["kind"] == "Service" and (m.get("spec") or {}).get("type") in ("LoadBalancer", "NodePort"):
        report(f"{_name(m)} is of type {m['spec']['type']}: publish services only through "
               "the Internet access gateway (a gateway route)")
    if m["kind"] == "Ingress":
        report(f"{_name(m)}: publish services only through the Internet access gateway")


def tls_min_version(args: ResourceValidationArgs, report) -> None:
    if _is(args, "InternetAccessGateway"):
        version = str(args.props.get("tls_min_version"))
        if _TLS_ORDER.get(version, -1) < _TLS_ORDER["1.2"]:
            report(f"gateway TLS minimum {version!r} is below 1.2")


def ha_rack_spread(args: ResourceValidationArgs, report) -> None:
    if not _is(args, "KubernetesCluster"):
        return
    racks = _plain(args.props.get("control_plane_racks")) or []
    if len(racks) < 3:
        report(f"cluster {args.name} has {len(racks)} control-plane members; Tier-III needs at least 3")
        return
    # Losing any one rack must not lose etcd quorum: no rack may hold a majority of the members.
    worst = max(racks.count(r) for r in set(racks))
    if worst > len(racks) // 2:
        report(f"cluster {args.name}: {worst} of {len(racks)} control-plane members share one rack; "
               "losing that rack would lose quorum")


def encryption_at_rest(args: ResourceValidationArgs, report) -> None:
    if _is(args, "KubernetesCluster") and args.props.get("secrets_encryption") not in ("aescbc", "aesgcm",
                                                                                       "secretbox", "kms"):
        report(f"cluster {args.name} does not encrypt Secrets at rest")


def transport_encrypted(args: ResourceValidationArgs, report) -> None:
    if _is(args, "TransportNetwork"):
        for link in _plain(args.props.get("links")) or []:
            if link.get("tunnel") not in ("wireguard", "ipsec"):
                report(f"link {link.get('a')}-{link.get('b')} is not encrypted")


def pod_resource_limits(args: ResourceValidationArgs, report) -> None:
    m = _manifest(args)
    if m is None or m["kind"] not in POD_TEMPLATE_KINDS | {"Pod", "CronJob"}:
        return
    # A typed resource may carry a field it leaves unset as None: `or {}` at each level.
    spec = m.get("spec") or {}
    if m["kind"] == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    pod = spec if m["kind"] == "Pod" else (spec.get("template") or {}).get("spec") or {}
    for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
        limits = (c.get("resources") or {}).get("limits") or {}
        if not {"cpu", "memory"} <= set(limits):
            report(f"{_name(m)}: container {c.get('name')} has no cpu/memory limits")


def _policy(name: str, controls: str, description: str, validate) -> ResourceValidationPolicy:
    policy = ResourceValidationPolicy(name=name, description=f"[{controls}] {description}", validate=validate,
                                      enforcement_level=EnforcementLevel.MANDATORY)
    policy.controls = controls.split(",")
    return policy


POLICIES = [
    _policy("data-residency", "SC-DATA-01", "Every site is in an allowed country.", data_residency),
    _policy("gateway-only-exposure", "SC-NET-01", "No LoadBalancer/NodePort Service or Ingress: publish "
            "through the Internet access gateway.", gateway_only_exposure),
    _policy("tls-min-1-2", "SC-CRY-01", "The gateway accepts TLS 1.2 or newer only.", tls_min_version),
    _policy("ha-rack-spread", "SC-AVL-02", "At least 3 control-plane members, no rack holds a majority.",
            ha_rack_spread),
    _policy("encryption-at-rest", "SC-DATA-02", "Kubernetes Secrets are encrypted at rest.", encryption_at_rest),
    _policy("transport-encrypted", "SC-NET-02", "Every inter-site link is encrypted.", transport_encrypted),
    _policy("pod-resource-limits", "SC-K8S-03", "Every container has cpu and memory limits.",
            pod_resource_limits),
]
