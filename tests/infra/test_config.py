"""Stack config validation: example stacks parse; each kind of mistake is named by its field."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from infra import config as cfg
from tests.infra.conftest import lab_data

STACKS = sorted((Path(__file__).resolve().parents[2] / "infra" / "stacks").glob("*.yaml"))


@pytest.mark.parametrize("stack", STACKS, ids=lambda p: p.stem)
def test_example_stacks_are_valid(stack):
    cloud = cfg.parse(yaml.safe_load(stack.read_text()))
    assert cloud.sites and cloud.transport.links


def test_production_example_has_three_tier3_sites():
    prod = cfg.parse(yaml.safe_load((STACKS[0].parent / "production.yaml").read_text()))
    assert len(prod.sites) >= 3 and all(s.tier == "III" for s in prod.sites)
    assert cfg.parse({**yaml.safe_load((STACKS[0].parent / "production.yaml").read_text()), "min_sites": 3})


def test_describe_keeps_a_rule_breaking_stack_but_refuses_a_malformed_one():
    data = lab_data()
    data["gateway"]["tls_min_version"] = "1.0"
    assert cfg.describe(data).gateway.tls_min_version == "1.0"  # parse refuses it: test_rules.py
    data["clusters"][0]["site"] = "dc-nowhere"
    with pytest.raises(cfg.ConfigError) as exc:
        cfg.describe(data)
    assert dict(exc.value.problems) == {"clusters[0].site": "unknown site 'dc-nowhere'; one of ['dc-astana', "
                                                            "'dc-almaty']"}


def problems(data) -> dict[str, str]:
    with pytest.raises(cfg.ConfigError) as exc:
        cfg.parse(data)
    return dict(exc.value.problems)


def test_overlapping_cidrs_name_both_fields():
    data = lab_data()
    data["clusters"][1]["service_cidr"] = "10.96.128.0/17"
    assert "overlaps clusters[0].service_cidr" in problems(data)["clusters[1].service_cidr"]


def test_pod_cidr_needs_a_slash_24_per_worker():
    data = lab_data()
    data["clusters"][0]["pod_cidr"] = "10.64.0.0/25"
    assert "no /24 for each of the" in problems(data)["clusters[0].pod_cidr"]


def test_tier3_cluster_needs_three_control_plane_nodes():
    data = lab_data()
    data["sites"][0]["nodes"][2]["role"] = "worker"
    assert "at least 3" in problems(data)["clusters[0]"]


def test_control_plane_in_one_rack_is_refused():
    data = lab_data()
    for node in data["sites"][1]["nodes"][:3]:
        node["rack"] = "r2"
    assert "3 of 3 control-plane members are in rack 'r2'" in problems(data)["clusters[1]"]


@pytest.mark.parametrize(("racks", "refused"), [(["r1", "r2", "r3"], False), (["r1", "r1", "r2"], True),
                                                (["r1", "r2", "r3", "r4", "r5"], False),
                                                (["r1", "r1", "r2", "r2", "r3"], False),
                                                (["r1", "r1", "r1", "r2", "r3"], True)])
def test_losing_any_rack_keeps_etcd_quorum(racks, refused):
    data = lab_data()
    site = data["sites"][0]
    site["racks"] = sorted(set(racks) | {"r1", "r2", "r3"})
    cps = [{"name": f"astana-cp{i + 1}", "role": "control-plane", "rack": r} for i, r in enumerate(racks)]
    site["nodes"] = cps + [n for n in site["nodes"] if n["role"] != "control-plane"]
    if refused:
        assert "losing it loses etcd quorum" in problems(data)["clusters[0]"]
    else:
        assert cfg.parse(data).clusters


def test_an_even_etcd_membership_is_refused():
    data = lab_data()
    data["sites"][0]["racks"].append("r4")
    data["sites"][0]["nodes"].append({"name": "astana-cp4", "role": "control-plane", "rack": "r4"})
    assert "even membership" in problems(data)["clusters[0]"]


def test_site_outside_the_country_list():
    data = lab_data()
    data["sites"][1]["country"] = "DE"
    assert "data residency" in problems(data)["sites[1].country"]


def test_link_to_unknown_site():
    data = lab_data()
    data["transport"]["links"][0]["b"] = "dc-shymkent"
    assert "unknown site 'dc-shymkent'" in problems(data)["transport.links[0].b"]


def test_plaintext_transport_is_refused():
    data = lab_data()
    data["transport"]["links"][0]["tunnel"] = "none"
    assert "plaintext" in problems(data)["transport.links[0].tunnel"]


def test_unknown_field_is_named():
    data = lab_data()
    data["sites"][0]["colour"] = "red"
    assert "sites[0].colour" in problems(data)


def test_published_service_outside_government_domain():
    data = lab_data()
    data["gateway"]["published_services"][0]["hostname"] = "portal.example.com"
    assert "government domain" in problems(data)["gateway.published_services[0].hostname"]


def test_gateway_addresses_are_a_gateways_and_each_one_nodes():
    data = lab_data()
    data["sites"][0]["nodes"][5].pop("public_address")
    assert "Internet-facing address" in problems(data)["sites[0].nodes[5].public_address"]
    data = lab_data()
    data["sites"][1]["nodes"][0]["transport_address"] = "10.210.254.12"
    assert "only gateway nodes" in problems(data)["sites[1].nodes[0].transport_address"]
    data = lab_data()
    data["sites"][1]["nodes"][5]["transport_address"] = "10.210.254.10"  # astana-gw's
    assert "already sites[0].nodes[5].transport_address" in problems(data)["sites[1].nodes[5].transport_address"]


def test_a_linked_site_needs_a_gateway_with_a_transport_address():
    data = lab_data()
    data["sites"][1]["nodes"][5].pop("transport_address")
    assert "no gateway with a transport_address" in problems(data)["transport.links[0].b"]


@pytest.mark.parametrize(("domain", "ok"), [("gov.kz", True), ("egov.kz", True), ("almaty.gov.kz", True),
                                            ("example.com", False), ("gov.kz.example.com", False), ("kz", False)])
def test_the_domain_is_a_government_domain_as_the_tenant_chart_takes_it(domain, ok):
    data = lab_data()
    data["domain"] = domain
    for svc in data["gateway"]["published_services"]:
        svc["hostname"] = f"portal.{domain}"
    if ok:
        assert cfg.parse(data).domain == domain
    else:
        assert "not a government domain" in problems(data)["domain"]


def test_egress_allow_list_takes_host_names_only():
    data = lab_data()
    data["gateway"]["allowed_egress"] = ["repo.internet.lab", "0.0.0.0/0", "*.kz"]
    found = problems(data)
    assert set(found) == {"gateway.allowed_egress[1]", "gateway.allowed_egress[2]"}, found


def test_all_problems_are_reported_at_once():
    data = lab_data()
    data["sites"][1]["country"] = "DE"
    data["transport"]["links"][0]["tunnel"] = "none"
    assert {"sites[1].country", "transport.links[0].tunnel"} <= set(problems(data))


def test_a_fields_own_mistake_and_the_checks_across_the_fields_that_parse_come_in_one_report():
    # A tenant's quantity fails to parse, so the control rules (which read the whole stack) wait for the next run;
    # the checks across the fields that did parse report now: the user fixes all of these in one go.
    data = lab_data()
    data["tenants"] = [{"name": "egov", "sites": ["dc-astana", "dc-nowhere"], "cpu": "lots"}]
    data["clusters"][1]["site"] = "dc-elsewhere"
    data["sites"][1]["nodes"][0]["name"] = data["sites"][0]["nodes"][0]["name"]
    found = problems(data)
    assert set(found) == {"tenants[0].cpu", "clusters[1].site", "sites[1].nodes[0].name"}, found
    # Positive control: with the tenant's quantity fixed, the same stack is read in full and the rules join in.
    data["tenants"][0]["cpu"] = "2"
    data["sites"][1]["country"] = "DE"
    assert {"clusters[1].site", "sites[1].nodes[0].name", "tenants[0].sites[1]", "sites[1].country"} <= set(
        problems(data))


def test_a_site_reports_every_problem_of_its_nodes_at_once():
    data = lab_data()
    data["sites"][1]["racks"] = ["r1"]
    data["sites"][1]["monitoring_node"] = "almaty-gw"
    assert set(problems(data)) == {"sites[1].nodes[1].rack", "sites[1].nodes[2].rack", "sites[1].nodes[4].rack",
                                   "sites[1].nodes[5].rack", "sites[1].monitoring_node"}


# --- property tests: random valid configs parse; a random single mistake is always caught -----------

@st.composite
def valid_clouds(draw):
    n_sites = draw(st.integers(2, 5))  # min_sites (SC-AVL-03) is 2 by default
    sites, clusters = [], []
    for i in range(n_sites):
        racks = [f"r{j}" for j in range(draw(st.integers(3, 5)))]
        n_cp = draw(st.sampled_from([3, 5]))  # an odd etcd membership (SC-K8S-06)
        nodes = [{"name": f"s{i}-cp{j}", "role": "control-plane", "rack": racks[j % len(racks)]}
                 for j in range(n_cp)]
        nodes += [{"name": f"s{i}-w{j}", "role": "worker", "rack": draw(st.sampled_from(racks))}
                  for j in range(draw(st.integers(0, 4)))]
        nodes.append({"name": f"s{i}-gw", "role": "gateway", "rack": racks[0],
                      "transport_address": f"172.16.0.{i + 1}", "public_address": f"203.0.113.{i + 1}"})
        sites.append({"name": f"dc-{i}", "city": f"City {i}", "country": "KZ", "racks": racks,
                      "subnet": f"10.{i}.0.0/24", "nodes": nodes,
                      "power": draw(st.sampled_from(["N+1", "2N"]))})
        clusters.append({"name": f"k{i}", "site": f"dc-{i}", "kubernetes_version": "1.33.13",
                         "pod_cidr": f"10.{100 + i}.0.0/16", "service_cidr": f"10.{150 + i}.0.0/16"})
    links = [{"a": f"dc-{i}", "b": f"dc-{j}", "tunnel": draw(st.sampled_from(["wireguard", "ipsec"]))}
             for i in range(n_sites) for j in range(i + 1, n_sites)]
    return {"sites": sites, "clusters": clusters, "transport": {"address_plan": "10.250.0.0/16", "links": links}}


@settings(max_examples=60, deadline=None)
@given(valid_clouds())
def test_random_valid_configs_parse(data):
    cloud = cfg.parse(data)
    assert len(cloud.clusters) == len(cloud.sites)


def _published(d, **service):
    d.setdefault("gateway", {})["published_services"] = [
        {"name": "portal", "hostname": "portal.gov.kz", "site": "dc-0", "backend": "10.0.0.30:8080", **service}]


def _tenant(d, **tenant):
    d["tenants"] = [{"name": "agency", "sites": ["dc-0"], **tenant}]


def _drop_gateway(d):
    d["sites"][0]["nodes"] = [n for n in d["sites"][0]["nodes"] if n["role"] != "gateway"]
    d["transport"]["links"] = [link for link in d["transport"]["links"] if "dc-0" not in (link["a"], link["b"])]


# One mistake of each class the stack validation refuses, and the field its error must name.
MISTAKES = {
    "country": (lambda d: d["sites"][0].__setitem__("country", "CN"), "sites[0].country"),
    "plaintext": (lambda d: d["transport"]["links"][0].__setitem__("tunnel", "none"), "transport.links[0].tunnel"),
    "overlap": (lambda d: d["clusters"][0].__setitem__("pod_cidr", d["sites"][0]["subnet"]), "clusters[0].pod_cidr"),
    "two-cp": (lambda d: d["sites"][0].__setitem__(
        "nodes", [n for n in d["sites"][0]["nodes"] if n["role"] != "control-plane"]
        + [n for n in d["sites"][0]["nodes"] if n["role"] == "control-plane"][:2]), "clusters[0]"),
    "unknown-site": (lambda d: d["clusters"][0].__setitem__("site", "dc-nowhere"), "clusters[0].site"),
    "name-across-sites": (lambda d: d["sites"][1]["nodes"][0].__setitem__("name", d["sites"][0]["nodes"][0]["name"]),
                          "sites[1].nodes[0].name"),
    "subnet-too-small": (lambda d: d["sites"][0].__setitem__("subnet", "10.0.0.0/29"), "sites[0].subnet"),
    "no-gateway-node": (_drop_gateway, "sites[0].nodes"),
    "hostname": (lambda d: _published(d, hostname="portal_1.gov.kz"), "gateway.published_services[0].hostname"),
    "backend": (lambda d: _published(d, backend="10.0.0.30"), "gateway.published_services[0].backend"),
    "cpu": (lambda d: _tenant(d, cpu="4 cores"), "tenants[0].cpu"),
    "memory": (lambda d: _tenant(d, memory="8GB"), "tenants[0].memory"),
    "egress-allow-all": (lambda d: d.setdefault("gateway", {}).__setitem__("allowed_egress", ["0.0.0.0/0"]),
                         "gateway.allowed_egress[0]"),
    "isolated-site": (lambda d: d["transport"].__setitem__(
        "links", [link for link in d["transport"]["links"] if "dc-0" not in (link["a"], link["b"])]),
        "transport.links"),
    "even-etcd": (lambda d: d["sites"][0]["nodes"].append(
        {"name": "s0-cp-extra", "role": "control-plane", "rack": d["sites"][0]["racks"][1]}), "clusters[0]"),
    "cert-window": (lambda d: d.__setitem__("cert_rotate_before_days", 400), "cert_rotate_before_days"),
}


@settings(max_examples=80, deadline=None)
@given(valid_clouds(), st.sampled_from(sorted(MISTAKES)))
def test_random_single_mistake_is_named_by_its_field(data, mistake):
    cfg.parse(data)  # positive control: the drawn stack itself is valid
    mutate, field = MISTAKES[mistake]
    mutate(data)
    with pytest.raises(cfg.ConfigError) as exc:
        cfg.parse(data)
    assert field in {f for f, _ in exc.value.problems}, exc.value.problems


@pytest.mark.parametrize(("value", "ok"), [("portal.gov.kz", True), ("a-b.c1.gov.kz", True), ("Portal.gov.kz", False),
                                           ("portal..gov.kz", False), ("-x.gov.kz", False), ("x" * 64 + ".kz", False)])
def test_published_hostname_syntax(value, ok):
    data = lab_data()
    service = {"name": "portal", "hostname": value, "site": data["sites"][0]["name"], "backend": "10.0.0.30:80"}
    data.setdefault("gateway", {})["published_services"] = [service]
    if ok:
        cfg.parse(data)
    else:
        with pytest.raises(cfg.ConfigError, match="published_services.0..hostname"):
            cfg.parse(data)


def test_hosts_config_names_the_field_and_the_fix(tmp_path):
    key = tmp_path / "id_ed25519"
    with pytest.raises(cfg.ConfigError) as exc:
        cfg.parse_hosts({"ssh_user": "sovadmin", "ssh_private_key_file": str(key), "state_dir": "state",
                         "forks": 5})
    problems = dict(exc.value.problems)
    assert set(problems) == {"sovcloud:hosts.ssh_private_key_file", "sovcloud:hosts.state_dir",
                             "sovcloud:hosts.forks"}, problems  # every problem at once
    assert "does not exist" in problems["sovcloud:hosts.ssh_private_key_file"] and "make lab" in str(exc.value)
    assert problems["sovcloud:hosts.state_dir"] == "'state' must be an absolute path (or start with ~)"
    key.write_text("k")
    ok = cfg.parse_hosts({"ssh_user": "sovadmin", "ssh_private_key_file": str(key), "state_dir": "~/lab"})
    assert ok.harden and ok.timeout_s == 1800
