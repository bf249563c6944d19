"""Rendered tenant chart: Pod Security, quotas, default-deny networking, RBAC, routes, backup, SLO.

Controls: SC-K8S-01 (PSA labels), SC-K8S-02 (RBAC), SC-K8S-03 (quota/limits), SC-NET-01/SC-NET-03
(network policies), SC-CRY-01 (TLS routes), SC-BCK-01 (backup schedule), SC-AVL-01 (SLO probe).
"""

from __future__ import annotations

import pytest
import yaml

from infra.components import AGENCY_GROUP_PREFIX

from .conftest import TENANT, by_kind, ci_values, one

pytestmark = pytest.mark.tools

CI = {p.stem: p for p in ci_values(TENANT)}
NAMESPACED = {"ResourceQuota", "LimitRange", "NetworkPolicy", "Role", "RoleBinding", "ConfigMap"}


@pytest.fixture(params=sorted(CI), scope="module")
def case(request, helm):
    path = CI[request.param]
    values = yaml.safe_load(path.read_text())
    return values, helm.template(TENANT, [path])


def namespaces_of(values: dict) -> list[str]:
    return [f"{values['agency']}-{s}" for s in values.get("namespaces", ["prod"])]


def test_every_object_labelled_and_in_an_agency_namespace(case):
    values, docs = case
    nss = namespaces_of(values)
    for d in docs:
        labels = d["metadata"]["labels"]
        ident = f"{d['kind']}/{d['metadata']['name']}"
        assert labels["sovcloud.kz/agency"] == values["agency"], ident
        for key in ("name", "instance", "version", "managed-by", "part-of"):
            assert labels.get(f"app.kubernetes.io/{key}"), f"{ident} lacks app.kubernetes.io/{key}"
        assert d["kind"] in NAMESPACED | {"Namespace"}, f"unexpected kind {ident}"
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] in nss, ident


@pytest.mark.control("SC-K8S-01")
def test_namespaces_enforce_restricted_at_pinned_version(case):
    values, docs = case
    nss = by_kind(docs, "Namespace")
    assert sorted(n["metadata"]["name"] for n in nss) == sorted(namespaces_of(values))
    for ns in nss:
        labels = ns["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
            assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "v1.33"
        assert labels["sovcloud.kz/data-classification"] == values.get("dataClassification", "internal")


@pytest.mark.control("SC-K8S-03")
def test_quota_and_limits_in_every_namespace(case):
    values, docs = case
    for ns in namespaces_of(values):
        hard = one(docs, "ResourceQuota", "tenant-quota", ns)["spec"]["hard"]
        for key in (
            "requests.cpu",
            "requests.memory",
            "limits.cpu",
            "limits.memory",
            "pods",
            "persistentvolumeclaims",
            "requests.storage",
        ):
            assert hard[key], key
        # No tenant can open a port on the nodes or get a public load balancer (SC-NET-01).
        assert hard["services.loadbalancers"] == "0"
        assert hard["services.nodeports"] == "0"
        limit = one(docs, "LimitRange", "tenant-limits", ns)["spec"]["limits"][0]
        assert limit["type"] == "Container"
        for section in ("default", "defaultRequest", "max"):
            assert set(limit[section]) == {"cpu", "memory"}


def _peers(policies: list[dict], direction: str) -> list[dict]:
    key, peer_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    out = []
    for p in policies:
        for rule in p["spec"].get(key) or []:
            assert rule.get(peer_key), f"{p['metadata']['name']}: a rule without peers allows everything"
            out += rule[peer_key]
    return out


@pytest.mark.control("SC-NET-03")
def test_network_default_deny_plus_explicit_allows(case):
    values, docs = case
    net = {"internetEgress": True, "allowSameNamespace": False, **values.get("network", {})}
    for ns in namespaces_of(values):
        pols = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["namespace"] == ns]
        deny = one(pols, "NetworkPolicy", "default-deny-all")
        assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

        for peer in _peers(pols, "Egress"):
            assert "ipBlock" not in peer, "egress by IP would bypass the gateway"
            if "namespaceSelector" in peer:
                target = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                assert target in {"kube-system", "sovcloud-gateway"}, target
                assert peer["podSelector"]["matchLabels"], "egress must name the DNS/gateway pods"
            else:
                assert net["allowSameNamespace"] and peer == {"podSelector": {}}
        dns = one(pols, "NetworkPolicy", "allow-egress-dns")["spec"]["egress"][0]
        assert {p["port"] for p in dns["ports"]} == {53}
        gateway = [p for p in pols if p["metadata"]["name"] == "allow-egress-internet-gateway"]
        if net["internetEgress"]:
            assert [p["port"] for p in gateway[0]["spec"]["egress"][0]["ports"]] == [3128]
        else:
            assert gateway == []

        sources = set()
        for peer in _peers(pols, "Ingress"):
            assert "ipBlock" not in peer
            if "namespaceSelector" in peer:
                sources.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
            else:
                assert net["allowSameNamespace"] and peer == {"podSelector": {}}
        assert sources == {"monitoring", "sovcloud-gateway"}
        same = [p for p in pols if p["metadata"]["name"] == "allow-same-namespace"]
        assert bool(same) == net["allowSameNamespace"]


# The chart's default group prefix is the one the platform issues agencies' identities in (infra Tenant).
DEFAULT_PREFIX = yaml.safe_load((TENANT / "values.yaml").read_text())["rbac"]["groupPrefix"]
FORBIDDEN_WRITE = {"roles", "rolebindings", "resourcequotas", "limitranges", "namespaces"}
# An agency's admins add their own NetworkPolicies; the chart's stay the platform's (an admission policy guards
# them: tests/charts/test_agency_identity.py). Developers and viewers write none.
POLICY_WRITERS = {"admin"}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


@pytest.mark.control("SC-K8S-02")
def test_rbac_namespaced_least_privilege(case):
    values, docs = case
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    for ns in namespaces_of(values):
        for role in ("admin", "developer", "viewer"):
            r = one(docs, "Role", f"agency-{role}", ns)
            for rule in r["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], f"{role}: wildcard in {field}"
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), role
                if WRITE_VERBS & set(rule["verbs"]):
                    assert not FORBIDDEN_WRITE & set(rule["resources"]), f"{role} writes {rule['resources']}"
                    assert role in POLICY_WRITERS or "networkpolicies" not in rule["resources"], role
            reads_secrets = any("secrets" in rule["resources"] for rule in r["rules"])
            assert reads_secrets == (role == "admin"), f"{role} secrets access"
            binding = one(docs, "RoleBinding", f"agency-{role}", ns)
            assert binding["roleRef"] == {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"agency-{role}",
            }
            assert binding["subjects"] == [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Group",
                    "name": f"{values.get('rbac', {}).get('groupPrefix', DEFAULT_PREFIX)}{values['agency']}:{role}",
                }
            ]


def test_backup_schedule_for_dr_tooling(case):
    values, docs = case
    home = namespaces_of(values)[0]
    cm = one(docs, "ConfigMap", "backup-schedule", home)
    assert cm["metadata"]["labels"]["sovcloud.kz/backup-schedule"] == "true"
    spec = yaml.safe_load(cm["data"]["backup.yaml"])
    backup = values.get("backup", {})
    assert spec["schedule"] == backup.get("schedule", "30 1 * * *")
    assert set(spec["retention"]) == {"daily", "weekly", "monthly"}
    assert spec["retention"]["daily"] >= 1
    want = [f"{values['agency']}-{d['name']}" for d in backup.get("datasets", [])]
    assert [d["name"] for d in spec["datasets"]] == want
    for d in spec["datasets"]:
        assert d["namespace"] in namespaces_of(values)


def test_full_values_routes_and_slo(helm):
    docs = helm.template(TENANT, [CI["full-values"]])
    routes = yaml.safe_load(one(docs, "ConfigMap", "gateway-routes", "egov-prod")["data"]["routes.json"])
    assert [r["host"] for r in routes] == ["egov.gov.kz", "api.egov.gov.kz", "staging.egov.gov.kz"]
    assert routes[0]["tls"] == {"minVersion": "1.3"}
    assert routes[1] == {
        "host": "api.egov.gov.kz",
        "path": "/v1",
        "tls": {"minVersion": "1.2"},
        "backend": {"namespace": "egov-prod", "service": "api", "port": 8080},
    }
    assert routes[2]["backend"]["namespace"] == "egov-staging"
    probe = yaml.safe_load(one(docs, "ConfigMap", "slo-probe", "egov-prod")["data"]["probe.yaml"])
    assert probe == {
        "agency": "egov",
        "targetUrl": "https://egov.gov.kz/healthz",
        "objective": 99.95,
        "windowDays": 30,
        "intervalSeconds": 30,
        "timeoutSeconds": 5,
        "expectedStatus": [200],
    }


def test_minimal_values_publish_no_routes_or_probe(helm):
    docs = helm.template(TENANT, [CI["minimal-values"]])
    names = {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    assert names == {"backup-schedule"}


def test_other_government_domain_is_honoured(helm):
    route = {
        "gateway.domain": "egov.kz",
        "gateway.routes[0].host": "portal.egov.kz",
        "gateway.routes[0].namespace": "prod",
        "gateway.routes[0].service": "portal",
        "gateway.routes[0].port": 443,
    }
    docs = helm.template(TENANT, [CI["minimal-values"]], route)
    routes = yaml.safe_load(one(docs, "ConfigMap", "gateway-routes")["data"]["routes.json"])
    assert routes[0]["host"] == "portal.egov.kz"
    # The default gov.kz is no longer accepted once the domain is egov.kz.
    err = helm.template_error(TENANT, [CI["minimal-values"]], {**route, "gateway.routes[0].host": "x.gov.kz"})
    assert 'gateway.routes[0].host: "x.gov.kz" is outside the government domain "egov.kz"' in err


def test_the_charts_groups_are_those_the_platform_issues_identities_in():
    assert DEFAULT_PREFIX == AGENCY_GROUP_PREFIX
