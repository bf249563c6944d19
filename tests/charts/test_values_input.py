"""Bad chart values are refused by `helm template` (so by `helm install` and the stack's Tenant, which render the
same chart) with an error naming the value: a domain outside the government's, a namespace of the cluster or the
platform, a quantity, a gateway address, the backup schedule and retention, a route's TLS version. Random valid
values render; one mistake of each class applied to them is named at its path."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import TENANT, WORKLOAD

pytestmark = pytest.mark.tools

AGENCY = st.from_regex(r"^[a-z][a-z0-9]{1,8}$", fullmatch=True).filter(lambda a: a not in ("kube", "sovcloud"))
# Helm reads values as YAML 1.1, where y, n, on, off, yes and no are booleans: not a name, however written.
SUFFIX = st.from_regex(r"^[a-z][a-z0-9]{0,10}$", fullmatch=True).filter(
    lambda s: s not in ("y", "n", "on", "off", "yes", "no"))
GOV = st.sampled_from(["gov.kz", "egov.kz", "astana.gov.kz"])
QUANTITY = st.one_of(st.integers(1, 64), st.from_regex(r"^[1-9][0-9]{0,2}(m|Mi|Gi)?$", fullmatch=True))
ADDRESS = st.builds(lambda a, b, c, d, p: f"{a}.{b}.{c}.{d}/{p}", st.integers(1, 223), st.integers(0, 255),
                    st.integers(0, 255), st.integers(0, 255), st.just(32))
CRON = st.builds(lambda m, h, dow: f"{m} {h} * * {dow}", st.integers(0, 59), st.integers(0, 23),
                 st.sampled_from(["*", "1-5", "0,6", "*/2"]))


@st.composite
def tenant_values(draw) -> dict:
    namespaces = draw(st.lists(SUFFIX, min_size=1, max_size=3, unique=True))
    domain = draw(GOV)
    return {
        "agency": draw(AGENCY),
        "namespaces": namespaces,
        "quota": {"requestsCpu": draw(QUANTITY), "requestsMemory": draw(QUANTITY), "limitsCpu": draw(QUANTITY),
                  "limitsMemory": draw(QUANTITY), "pods": 10, "services": 5, "persistentVolumeClaims": 2,
                  "requestsStorage": draw(QUANTITY)},
        "network": {"gatewayAddresses": draw(st.lists(ADDRESS, max_size=2, unique=True))},
        "gateway": {"domain": domain, "routes": [{"host": f"portal.{domain}", "namespace": namespaces[0],
                                                  "service": "web", "port": 443,
                                                  "minTlsVersion": draw(st.sampled_from(["1.2", "1.3", 1.2, 1.3]))}]},
        "backup": {"schedule": draw(CRON), "datasets": [],
                   "retention": {"daily": draw(st.integers(1, 30)), "weekly": draw(st.integers(0, 8)),
                                 "monthly": draw(st.integers(0, 12))}},
    }


def _render(helm, chart: Path, values: dict, ok: bool) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values, f)
        f.flush()
        proc = helm.run("template", "t", str(chart), "--values", f.name, check=False)
    assert (proc.returncode == 0) == ok, proc.stderr or proc.stdout[:500]
    return proc.stderr


def _pointer(field: str) -> str:
    """`gateway.routes[0].host` as the JSON pointer helm's schema errors give: `/gateway/routes/0/host`."""
    return "/" + field.replace("[", ".").replace("]", "").replace(".", "/")


def _names(err: str, field: str) -> bool:
    """Whether helm's error names `field`: a schema error (`at '/a/b'`) or a template guard (`a.b: ...`)."""
    return f"at '{_pointer(field)}'" in err or f"\n{field}: " in err or f"): {field}: " in err


# Each mistake changes valid values and returns the path of the value it breaks.
def _foreign_domain(v: dict, draw) -> str:
    v["gateway"]["domain"] = draw(st.sampled_from(["example.com", "gov.kz.example.com", "evilgov.kz", "gov.ru",
                                                   "kz", "egov.kz.com"]))
    return "gateway.domain"


def _platform_namespace(v: dict, draw) -> str:
    v["agency"], suffix = draw(st.sampled_from([("kube", "system"), ("kube", "public"), ("sovcloud", "gateway"),
                                                ("kube", "x")]))
    v["namespaces"].append(suffix)
    return f"namespaces[{len(v['namespaces']) - 1}]"


def _bad_namespace(v: dict, draw) -> str:
    v["namespaces"].append(draw(st.sampled_from(["Prod", "-prod", "prod_1", "a" * 41, ""])))
    return f"namespaces[{len(v['namespaces']) - 1}]"


def _bad_quantity(v: dict, draw) -> str:
    field = draw(st.sampled_from(["requestsCpu", "limitsMemory", "requestsStorage"]))
    v["quota"][field] = draw(st.sampled_from([-1, "-1", "1.5.5", "10 Gi", "1GB", "", "lots"]))
    return f"quota.{field}"


def _bad_gateway_address(v: dict, draw) -> str:
    v["network"]["gatewayAddresses"].append(draw(st.sampled_from(
        ["0.0.0.0/0", "10.0.0.0/8", "010.0.0.1/32", "10.0.0.1", "10.0.0.256/32", "10.0.0.1/33", "::1/128"])))
    return f"network.gatewayAddresses[{len(v['network']['gatewayAddresses']) - 1}]"


def _bad_retention(v: dict, draw) -> str:
    field, value = draw(st.sampled_from([("daily", 0), ("daily", -1), ("weekly", -1), ("monthly", 121),
                                         ("daily", "7"), ("weekly", 1.5)]))
    v["backup"]["retention"][field] = value
    return f"backup.retention.{field}"


def _bad_schedule(v: dict, draw) -> str:
    v["backup"]["schedule"] = draw(st.sampled_from(["61 1 * * *", "0 24 * * *", "0 1 32 * *", "0 1 * 13 *",
                                                    "0 1 * * 8", "a b c d e", "daily", "0 1 * *", "0 1 31 2 *",
                                                    "0 1 31 4 *"]))
    return "backup.schedule"


def _bad_tls(v: dict, draw) -> str:
    v["gateway"]["routes"][0]["minTlsVersion"] = draw(st.sampled_from(["1.0", "1.1", 1.1, "TLSv1.2", "1.4", ""]))
    return "gateway.routes[0].minTlsVersion"


MISTAKES = {"domain": _foreign_domain, "platform-namespace": _platform_namespace, "namespace": _bad_namespace,
            "quantity": _bad_quantity, "gateway-address": _bad_gateway_address, "retention": _bad_retention,
            "schedule": _bad_schedule, "tls": _bad_tls}

HYPOTHESIS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@HYPOTHESIS
@given(values=tenant_values())
def test_valid_tenant_values_render(helm, values):
    _render(helm, TENANT, values, ok=True)


@HYPOTHESIS
@given(values=tenant_values(), mistake=st.sampled_from(sorted(MISTAKES)), data=st.data())
def test_one_mistake_is_named_at_its_value(helm, values, mistake, data):
    field = MISTAKES[mistake](values, data.draw)
    err = _render(helm, TENANT, values, ok=False)
    assert _names(err, field), (field, err)


def test_template_guards_report_every_problem_at_once(helm):
    values = {"agency": "kube", "namespaces": ["system"], "backup": {"schedule": "61 1 * * 8"},
              "gateway": {"domain": "gov.kz", "routes": [{"host": "x.egov.kz", "namespace": "dev", "service": "s",
                                                          "port": 1}]}}
    lines = _render(helm, TENANT, values, ok=False).splitlines()
    assert lines[0].endswith("invalid tenant values:")
    assert [line.split(":")[0] for line in lines[1:] if line and not line.startswith("Use --debug")] == [
        "namespaces[0]", "gateway.routes[0].host", "gateway.routes[0].namespace", "backup.schedule",
        "backup.schedule"], lines


@pytest.mark.parametrize(("chart", "sets"), [(TENANT, {"agency": "mvd"}), (WORKLOAD, {"route.enabled": False})])
@pytest.mark.parametrize("domain", ["example.com", "gov.kz.evil.com", "evilgov.kz"])
def test_a_non_government_domain_is_refused_by_both_charts(helm, chart, sets, domain):
    values = [chart / "ci" / ("minimal-values.yaml" if chart == TENANT else "deployment-values.yaml")]
    err = helm.template_error(chart, values, {**sets, "gateway.domain": domain})
    assert "at '/gateway/domain'" in err and "gov" in err, err
    helm.template(chart, values, {**sets, "gateway.domain": "astana.gov.kz"})  # the control


def test_the_government_domain_is_one_fact():
    """Both charts refuse the same domains: one definition, the tenant chart's, copied verbatim."""
    defs = [json.loads((c / "values.schema.json").read_text())["$defs"]["governmentDomain"] for c in (TENANT, WORKLOAD)]
    assert defs[0] == defs[1]


@pytest.mark.parametrize("version", ["1.2", "1.3", 1.2, 1.3])
def test_a_tls_version_written_as_a_number_is_the_same_version(helm, version):
    values = {"agency": "mvd", "gateway": {"domain": "gov.kz", "routes": [
        {"host": "a.gov.kz", "namespace": "prod", "service": "web", "port": 443, "minTlsVersion": version}]}}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values, f)
        f.flush()
        out = helm.run("template", "t", str(TENANT), "--values", f.name).stdout
    routes = next(d for d in yaml.safe_load_all(out) if d and d["metadata"]["name"] == "gateway-routes")
    assert json.loads(routes["data"]["routes.json"])[0]["tls"] == {"minVersion": str(version)}


@pytest.mark.parametrize(("schedule", "never_due"), [("0 1 30 2 *", True), ("0 1 31 11 *", True),
                                                     ("0 1 29 2 *", False), ("0 1 31 5 *", False)])
def test_a_schedule_on_a_day_the_month_never_has_is_refused(helm, schedule, never_due):
    values = [TENANT / "ci" / "minimal-values.yaml"]
    if never_due:
        assert "the schedule is never due" in helm.template_error(TENANT, values, {"backup.schedule": schedule})
    else:
        helm.template(TENANT, values, {"backup.schedule": schedule})  # a day the month has: due
