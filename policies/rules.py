"""The machine rule of each stack-level control, written once.

Every rule is a pure predicate over plain values (strings, numbers, lists, dicts) returning its problems,
each a sentence that names the fix; an empty list is a pass. The stack config validation (infra/config.py),
the policy pack (policies/pack/rules.py, over the components' properties), the stack's compliance summary
(infra/program.py) and the lab's topology (lab/config.py) all call these, so a rule cannot drift between
them. Standard library only: nothing here needs the project's dependencies, so the file can ship to a node.

`RULES` maps each predicate's name to its control id and the pack policy that applies it;
tests/policies/test_rules.py breaks each one in the lab stack and checks that exactly its control turns red at
every layer that checks it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# SC-CRY-01: the oldest TLS version the Internet access gateway may accept.
TLS_FLOOR = "1.2"
TLS_ORDER = ("1.0", "1.1", "1.2", "1.3")
# SC-DATA-02: kube-apiserver encryption providers that encrypt (identity stores plaintext).
ENCRYPTING_PROVIDERS = ("aescbc", "aesgcm", "secretbox", "kms")
# SC-NET-02: the tunnels of the transport network that encrypt.
ENCRYPTED_TUNNELS = ("wireguard", "ipsec")
# SC-AVL-03: data-centre tiers at or above Tier III (Uptime Institute), lowest first.
TIERS = ("I", "II", "III", "IV")
SITE_TIER_FLOOR = "III"
# SC-K8S-05: upstream Kubernetes patches its three newest minor releases; anything older is end of life.
KUBERNETES_SUPPORTED_MINORS = 3
# SC-NET-01: Service types that open a port outside the cluster, bypassing the Internet access gateway.
PUBLIC_SERVICE_TYPES = ("LoadBalancer", "NodePort")
# SC-DATA-03: classifications whose data is never published through the Internet access gateway.
UNPUBLISHABLE = ("secret",)
HOSTNAME = re.compile(r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def residency(country: str | None, allowed_countries: Sequence[str] | None) -> list[str]:
    """SC-DATA-01: a site (and so its data and backups) is in one of the stack's allowed countries."""
    if not allowed_countries:
        return ["no allowed countries are declared; set allowed_countries (e.g. [KZ]) (SC-DATA-01)"]
    if country not in allowed_countries:
        return [f"{country!r} is outside the allowed countries {list(allowed_countries)} (data residency, "
                "SC-DATA-01); place the site in-country"]
    return []


def rack_spread(racks: Sequence[str]) -> list[str]:
    """SC-AVL-02: at least 3 control-plane (etcd) members, and losing any one rack keeps etcd quorum."""
    n = len(racks)
    if n < 3:
        return [f"{n} control-plane member(s); add nodes with role control-plane until there are at least 3 "
                "(SC-AVL-02)"]
    rack, worst = Counter(racks).most_common(1)[0]
    quorum = n // 2 + 1
    if n - worst < quorum:
        return [f"{worst} of {n} control-plane members are in rack {rack!r}: losing it loses etcd quorum "
                f"({quorum}); move control-plane nodes so that no rack holds more than {n - quorum} (SC-AVL-02)"]
    return []


def etcd_odd_members(count: int) -> list[str]:
    """SC-K8S-06: an odd etcd membership (an even one tolerates no more failures than one member fewer). Below 3
    members the rack spread's minimum (SC-AVL-02) is what is broken."""
    if count >= 3 and count % 2 == 0:
        return [f"{count} control-plane (etcd) members: an even membership tolerates no more failures than "
                f"{count - 1}; use an odd number of control-plane nodes (SC-K8S-06)"]
    return []


def tls_floor(version: str | None) -> list[str]:
    """SC-CRY-01: TLS 1.2 or newer only."""
    if version not in TLS_ORDER or TLS_ORDER.index(version) < TLS_ORDER.index(TLS_FLOOR):
        return [f"TLS minimum {version!r} is below {TLS_FLOOR}; set tls_min_version to one of "
                f"{list(TLS_ORDER[TLS_ORDER.index(TLS_FLOOR):])} (SC-CRY-01)"]
    return []


def secrets_encryption(provider: str | None) -> list[str]:
    """SC-DATA-02: Kubernetes Secrets are encrypted at rest by the apiserver."""
    if provider not in ENCRYPTING_PROVIDERS:
        return [f"Secrets encryption provider {provider!r} does not encrypt; use one of "
                f"{list(ENCRYPTING_PROVIDERS)} (SC-DATA-02)"]
    return []


def transport_encrypted(tunnel: str | None) -> list[str]:
    """SC-NET-02: every inter-site link is an encrypted tunnel."""
    if tunnel not in ENCRYPTED_TUNNELS:
        return [f"plaintext transport between sites ({tunnel!r}) is forbidden; use tunnel: wireguard or "
                "tunnel: ipsec (SC-NET-02)"]
    return []


def service_exposure(kind: str, service_type: str | None) -> list[str]:
    """SC-NET-01: nothing is published except through the Internet access gateway."""
    if kind == "Service" and service_type in PUBLIC_SERVICE_TYPES:
        return [f"a Service of type {service_type} bypasses the gateway; use type ClusterIP and publish it "
                "through the Internet access gateway (a gateway route) (SC-NET-01)"]
    if kind == "Ingress":
        return ["an Ingress bypasses the gateway; publish through the Internet access gateway (a gateway route) "
                "(SC-NET-01)"]
    return []


def pod_limits(pod_spec: Mapping[str, Any] | None) -> list[str]:
    """SC-K8S-03: every container of a pod has cpu and memory limits."""
    spec = pod_spec or {}
    problems = []
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        limits = (c.get("resources") or {}).get("limits") or {}
        if not {"cpu", "memory"} <= set(limits):
            problems.append(f"container {c.get('name')} has no cpu/memory limits; set resources.limits.cpu and "
                            "resources.limits.memory (SC-K8S-03)")
    return problems


def _tier_ok(tier: object) -> bool:
    return tier in TIERS and TIERS.index(tier) >= TIERS.index(SITE_TIER_FLOOR)


def site_tier(tier: str | None) -> list[str]:
    """SC-AVL-03: a site is a data centre of Tier III or higher."""
    if not _tier_ok(tier):
        return [f"Tier {tier} is below Tier {SITE_TIER_FLOOR}; host the cloud in Tier {SITE_TIER_FLOOR} or higher "
                "data centres (SC-AVL-03)"]
    return []


def site_count(sites: Iterable[Mapping[str, Any]], minimum: int) -> list[str]:
    """SC-AVL-03: at least `minimum` Tier III+ sites, in distinct cities (one disaster must not take two).
    `sites`: {tier, city} each."""
    cities = {str(s.get("city")).casefold() for s in sites if _tier_ok(s.get("tier"))}
    if len(cities) < minimum:
        return [f"{len(cities)} distinct cities hold Tier {SITE_TIER_FLOOR}+ sites, the stack requires {minimum} "
                "(min_sites); add a site in another city (SC-AVL-03)"]
    return []


def egress_allow_list(destinations: Sequence[str]) -> list[str]:
    """SC-NET-04: the "electronic border": the gateway lets out only named hosts, never everything."""
    return [f"egress destination {d!r} is not a host name (a wildcard, an address or a range lets out more than "
            "one service); list each host name the nodes need (SC-NET-04)"
            for d in destinations if not (isinstance(d, str) and len(d) <= 253 and HOSTNAME.match(d))]


def node_exposure(role: str, transport_address: object = None, public_address: object = None) -> list[str]:
    """SC-NET-05: only gateway nodes face the Internet or join the transport network: nothing else is on both."""
    if role == "gateway":
        return []
    return [f"{key} on a {role} node: only gateway nodes face the transport network and the Internet; remove it "
            "(SC-NET-05)" for key, value in (("transport_address", transport_address),
                                             ("public_address", public_address)) if value is not None]


def transport_joins_all(sites: Sequence[str], links: Iterable[Mapping[str, str]]) -> list[str]:
    """SC-NET-06: the transport network joins every site (the links connect them all)."""
    if not sites:
        return []
    reached, todo = set(), [sites[0]]
    pairs = [(link.get("a"), link.get("b")) for link in links]
    while todo:
        site = todo.pop()
        if site not in reached:
            reached.add(site)
            todo += [b for a, b in pairs if a == site] + [a for a, b in pairs if b == site]
    return [f"site {s!r} has no path over the transport network to {sites[0]!r}; add a link to it "
            "(transport.links) (SC-NET-06)" for s in sites if s not in reached]


def classified_publishing(classification: str, routes: Sequence[Any]) -> list[str]:
    """SC-DATA-03: a tenant holding secret data publishes nothing through the Internet access gateway."""
    if classification in UNPUBLISHABLE and routes:
        return [f"a {classification} tenant publishes {len(routes)} gateway route(s); remove them "
                "(chart_values.gateway.routes) or serve the data over the transport network only (SC-DATA-03)"]
    return []


def backup_stores(stores: Sequence[str], cluster_sites: Sequence[str]) -> list[str]:
    """SC-BCK-03: once a stack keeps backups, every site with a cluster has its own store."""
    if not stores:
        return []
    return [f"site {s!r} runs a cluster but has no backup store; give it an s3_endpoint (SC-BCK-03)"
            for s in cluster_sites if s not in stores]


def backup_replica(stores: Sequence[str]) -> list[str]:
    """SC-BCK-03: backups land on another site's storage: a stack that keeps backups keeps them at two sites."""
    if stores and len(set(stores)) < 2:
        return [f"only {sorted(set(stores))} keeps backups: a copy must land on another site's storage; "
                "give a second site an s3_endpoint (SC-BCK-03)"]
    return []


def _minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"^v?(\d+)\.(\d+)(\.\d+)?$", str(version))
    return (int(m[1]), int(m[2])) if m else None


def kubernetes_supported(version: str, newest: str) -> list[str]:
    """SC-K8S-05: no end-of-life Kubernetes: a cluster runs one of the three newest minors, at most `newest`
    (the release the project builds and tests, toolchain/pins.py)."""
    have, top = _minor(version), _minor(newest)
    if have is None or top is None:
        return [f"kubernetes_version {version!r} is not a version such as 1.33.13 (SC-K8S-05)"]
    oldest = (top[0], top[1] - KUBERNETES_SUPPORTED_MINORS + 1)
    if have > top or have < oldest:
        return [f"Kubernetes {version} is outside the supported minors {oldest[0]}.{oldest[1]}-{top[0]}.{top[1]} "
                f"(end of life or not yet built); run a release in that window (SC-K8S-05)"]
    return []


def certificate_rotation(rotate_before_days: int, validity_days: int) -> list[str]:
    """SC-CRY-03: a certificate is re-issued before it expires, and not on every run: rotate-before is shorter
    than the validity."""
    if not 0 < rotate_before_days < validity_days:
        return [f"cert_rotate_before_days {rotate_before_days} is not below cert_validity_days {validity_days}: "
                "every run would re-issue every certificate; make it shorter than the validity (SC-CRY-03)"]
    return []


@dataclass(frozen=True)
class Rule:
    control: str
    check: Callable[..., list[str]]
    policy: str  # the pack's policy that applies it (several rules of one control may share one)
    what: str  # the policy's description

    @property
    def name(self) -> str:
        return self.check.__name__


TIER3_SITES = "Every site is Tier III or higher; at least min_sites of them, in distinct cities."
BACKUPS_ON_ANOTHER_SITE = "Every cluster's site has a backup store, and a copy lands on another site's."
RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("SC-DATA-01", residency, "data-residency", "Every site is in an allowed country."),
    Rule("SC-NET-01", service_exposure, "gateway-only-exposure",
         "No LoadBalancer/NodePort Service or Ingress: publish through the Internet access gateway."),
    Rule("SC-CRY-01", tls_floor, "tls-min-1-2", "The gateway accepts TLS 1.2 or newer only."),
    Rule("SC-AVL-02", rack_spread, "ha-rack-spread",
         "At least 3 control-plane members; losing any one rack keeps etcd quorum."),
    Rule("SC-DATA-02", secrets_encryption, "encryption-at-rest", "Kubernetes Secrets are encrypted at rest."),
    Rule("SC-NET-02", transport_encrypted, "transport-encrypted", "Every inter-site link is encrypted."),
    Rule("SC-K8S-03", pod_limits, "pod-resource-limits", "Every container has cpu and memory limits."),
    Rule("SC-AVL-03", site_tier, "tier3-sites", TIER3_SITES),
    Rule("SC-AVL-03", site_count, "tier3-sites", TIER3_SITES),
    Rule("SC-NET-04", egress_allow_list, "egress-named-hosts",
         "The gateway's egress allow-list names hosts only: no wildcard, address or range."),
    Rule("SC-NET-05", node_exposure, "gateway-only-edge",
         "Only gateway nodes face the Internet or join the transport network."),
    Rule("SC-NET-06", transport_joins_all, "transport-joins-all-sites",
         "The transport network's links connect every site."),
    Rule("SC-DATA-03", classified_publishing, "secret-data-unpublished",
         "A tenant classified secret publishes no gateway route."),
    Rule("SC-BCK-03", backup_stores, "backups-on-another-site", BACKUPS_ON_ANOTHER_SITE),
    Rule("SC-BCK-03", backup_replica, "backups-on-another-site", BACKUPS_ON_ANOTHER_SITE),
    Rule("SC-K8S-05", kubernetes_supported, "kubernetes-supported",
         "Every cluster runs one of the three newest Kubernetes minors the project builds."),
    Rule("SC-K8S-06", etcd_odd_members, "etcd-odd-members", "Every cluster's etcd has an odd membership."),
    Rule("SC-CRY-03", certificate_rotation, "certificate-rotation",
         "Certificates are re-issued before they expire: rotate-before is below the validity."),
)}
