"""Bad values fail the render before anything is created, with a message naming the value."""

from __future__ import annotations

import pytest

from .conftest import TENANT, WORKLOAD

pytestmark = pytest.mark.tools

T_MIN = TENANT / "ci" / "minimal-values.yaml"
W_OK = WORKLOAD / "ci" / "deployment-values.yaml"
ROUTE = {
    "gateway.routes[0].namespace": "prod",
    "gateway.routes[0].service": "web",
    "gateway.routes[0].port": 443,
}

CASES = [
    # (id, chart, values file, --set overrides, substrings the error must contain)
    ("tenant-missing-agency", TENANT, None, {}, ["at '/agency'", "minLength"]),
    ("tenant-agency-uppercase", TENANT, None, {"agency": "MVD"}, ["at '/agency'", "does not match pattern"]),
    (
        "tenant-route-outside-domain",
        TENANT,
        T_MIN,
        {**ROUTE, "gateway.routes[0].host": "portal.example.com"},
        ['gateway.routes[0].host: "portal.example.com" is outside the government domain "gov.kz"'],
    ),
    (
        "tenant-route-suffix-trick",
        TENANT,
        T_MIN,
        {**ROUTE, "gateway.routes[0].host": "evilgov.kz"},
        ["gateway.routes[0].host", "outside the government domain"],
    ),
    (
        "tenant-route-unknown-namespace",
        TENANT,
        T_MIN,
        {**ROUTE, "gateway.routes[0].host": "a.gov.kz", "gateway.routes[0].namespace": "dev"},
        ['gateway.routes[0].namespace: "dev" is not one of namespaces'],
    ),
    (
        "tenant-route-plaintext-field",
        TENANT,
        T_MIN,
        {**ROUTE, "gateway.routes[0].host": "a.gov.kz", "gateway.routes[0].tls": False},
        ["at '/gateway/routes/0'", "additional properties 'tls' not allowed"],
    ),
    (
        "tenant-tls-1.1",
        TENANT,
        T_MIN,
        {**ROUTE, "gateway.routes[0].host": "a.gov.kz", "gateway.routes[0].minTlsVersion": "1.1"},
        ["at '/gateway/routes/0/minTlsVersion'"],
    ),
    ("tenant-bad-classification", TENANT, T_MIN, {"dataClassification": "top"}, ["at '/dataClassification'"]),
    ("tenant-psa-baseline", TENANT, T_MIN, {"podSecurity.level": "baseline"}, ["at '/podSecurity/level'"]),
    ("tenant-psa-unpinned", TENANT, T_MIN, {"podSecurity.version": "latest"}, ["at '/podSecurity/version'"]),
    ("tenant-typo-key", TENANT, T_MIN, {"quota.cpu": "4"}, ["at '/quota'", "additional properties 'cpu'"]),
    (
        "tenant-secret-with-internet",
        TENANT,
        T_MIN,
        {
            "dataClassification": "secret",
            "backup.datasets[0].name": "db",
            "backup.datasets[0].namespace": "prod",
            "backup.datasets[0].kind": "postgres",
        },
        ["network.internetEgress: must be false"],
    ),
    (
        "tenant-confidential-no-backup",
        TENANT,
        T_MIN,
        {"dataClassification": "confidential"},
        ['backup.datasets: dataClassification "confidential" requires at least one backup dataset'],
    ),
    ("tenant-bad-cron", TENANT, T_MIN, {"backup.schedule": "daily"}, ["at '/backup/schedule'"]),
    (
        "tenant-slo-plain-http",
        TENANT,
        T_MIN,
        {"slo.enabled": True, "slo.targetUrl": "http://a.gov.kz/"},
        ["at '/slo/targetUrl'"],
    ),
    (
        "tenant-slo-foreign-host",
        TENANT,
        T_MIN,
        {"slo.enabled": True, "slo.targetUrl": "https://a.example.com/"},
        ['slo.targetUrl: host "a.example.com" is outside the government domain'],
    ),
    ("tenant-slo-objective-100", TENANT, T_MIN, {"slo.objective": 100}, ["at '/slo/objective'"]),
    ("workload-missing-agency", WORKLOAD, W_OK, {"agency": ""}, ["at '/agency'"]),
    (
        "workload-missing-resources",
        WORKLOAD,
        None,
        {"agency": "mvd", "image.repository": "r/x", "image.digest": "sha256:" + "a" * 64},
        ["at '/resources'", "missing properties 'requests', 'limits'"],
    ),
    (
        "workload-missing-memory-limit",
        WORKLOAD,
        W_OK,
        {"resources.limits.memory": None},
        ["at '/resources/limits/memory'"],
    ),
    (
        "workload-loadbalancer",
        WORKLOAD,
        W_OK,
        {"service.type": "LoadBalancer"},
        ["at '/service/type'", "value must be 'ClusterIP'"],
    ),
    ("workload-nodeport", WORKLOAD, W_OK, {"service.type": "NodePort"}, ["at '/service/type'"]),
    (
        "workload-route-outside-domain",
        WORKLOAD,
        W_OK,
        {"route.host": "portal.example.com"},
        ['route.host: "portal.example.com" is outside the government domain "gov.kz"'],
    ),
    ("workload-route-without-host", WORKLOAD, W_OK, {"route.host": ""}, ["at '/route/host'"]),
    ("workload-no-digest", WORKLOAD, W_OK, {"image.digest": ""}, ["at '/image/digest'"]),
    ("workload-latest-tag", WORKLOAD, W_OK, {"image.tag": "latest"}, ["at '/image/tag'"]),
    ("workload-root-uid", WORKLOAD, W_OK, {"runAsUser": 0}, ["at '/runAsUser'"]),
    ("workload-privileged-port", WORKLOAD, W_OK, {"containerPort": 80}, ["at '/containerPort'"]),
    ("workload-bad-kind", WORKLOAD, W_OK, {"kind": "DaemonSet"}, ["at '/kind'"]),
    ("workload-bad-probe-type", WORKLOAD, W_OK, {"probes.type": "exec"}, ["at '/probes/type'"]),
    ("workload-secret-mount-without-path", WORKLOAD, W_OK, {"secretMounts[0].secretName": "db"},
     ["at '/secretMounts/0'", "mountPath"]),
    (
        "workload-volume-on-deployment",
        WORKLOAD,
        W_OK,
        {"persistence.enabled": True},
        ["persistence.enabled: needs kind: StatefulSet"],
    ),
    (
        "workload-pdb-allows-all-down",
        WORKLOAD,
        W_OK,
        {"replicas": 1},
        ["pdb.maxUnavailable: must be below replicas"],
    ),
    (
        "workload-hpa-min-over-max",
        WORKLOAD,
        W_OK,
        {"hpa.enabled": True, "hpa.minReplicas": 5, "hpa.maxReplicas": 3},
        ["hpa.minReplicas: must not exceed hpa.maxReplicas"],
    ),
    (
        "workload-security-override",
        WORKLOAD,
        W_OK,
        {"securityContext.privileged": True},
        ["additional properties 'securityContext' not allowed"],
    ),
]


@pytest.mark.parametrize(
    ("chart", "values", "sets", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_values_fail_naming_the_value(helm, chart, values, sets, expected):
    err = helm.template_error(chart, [values] if values else [], sets)
    for text in expected:
        assert text in err, f"{text!r} not in:\n{err}"
