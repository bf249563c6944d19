"""Topology validation (unit tests: no podman)."""

import copy
import subprocess
import sys

import pytest
import yaml

from lab import inventory
from lab.config import DEFAULT_PATH, ConfigError, load, parse, raw

RAW = raw()


def _bad(mutate) -> str:
    data = copy.deepcopy(RAW)
    mutate(data)
    with pytest.raises(ConfigError) as e:
        parse(data)
    return str(e.value)


def test_shipped_topology_is_two_tier3_sites():
    cfg = load()
    assert [(s.name, s.role) for s in cfg.sites] == [("dc-astana", "primary"), ("dc-almaty", "secondary")]
    for s in cfg.sites:
        roles = [n.role for n in s.nodes]
        assert (roles.count("control-plane"), roles.count("worker"), roles.count("gateway")) == (3, 2, 1)
        assert len({n.rack for n in s.nodes if n.role == "control-plane"}) == 3
    assert cfg.total_memory_mib() < 13 * 1024


def test_unknown_field_is_named():
    msg = _bad(lambda d: d["sites"][0]["nodes"][0].update(rack_name="r9"))
    assert "sites[0].nodes[0].rack_name: Extra inputs are not permitted" in msg


def test_control_plane_needs_three_racks():
    def two_racks(d):
        d["sites"][1]["nodes"][2]["rack"] = "r1"
    msg = _bad(two_racks)
    assert "sites[1].nodes: site dc-almaty: 2 of 3 control-plane members are in rack 'r1'" in msg
    assert "(SC-AVL-02)" in msg


def test_control_plane_needs_three_members():
    msg = _bad(lambda d: d["sites"][0]["nodes"].pop(2))
    assert "sites[0].nodes: site dc-astana: 2 control-plane member(s)" in msg and "(SC-AVL-02)" in msg


def test_site_needs_one_gateway():
    msg = _bad(lambda d: d["sites"][0]["nodes"].pop())
    assert "sites[0].nodes: must contain exactly one role: gateway" in msg and "dc-astana" in msg


def test_overlapping_subnets_rejected():
    msg = _bad(lambda d: d["sites"][1].update(subnet="10.210.1.0/25"))
    assert "sites[0].subnet: 10.210.1.0/24 overlaps sites[1].subnet 10.210.1.0/25" in msg


def test_memory_budget_enforced():
    msg = _bad(lambda d: d["memory_mib"].update(worker=4096))
    assert "  memory_mib: the lab would use" in msg and "13312" in msg


def test_bad_hostname_and_role_named():
    assert "sites[0].nodes[1].name: must be a lowercase hostname" in _bad(
        lambda d: d["sites"][0]["nodes"][1].update(name="Astana_CP2"))
    assert "sites[0].nodes[1].role:" in _bad(lambda d: d["sites"][0]["nodes"][1].update(role="master"))


def test_duplicate_node_names_rejected():
    msg = _bad(lambda d: d["sites"][1]["nodes"][0].update(name="astana-cp1"))
    assert "sites[].nodes[].name: must be unique across the lab; duplicated: ['astana-cp1']" in msg


def test_inventory_groups_per_site_and_role():
    inv = inventory.build(load())["all"]
    assert set(inv["children"]) == {"dc_astana", "dc_almaty", "control_plane", "worker", "gateway"}
    assert inv["children"]["dc_astana"]["hosts"]["astana-gw"]["ansible_host"] == "10.210.1.15"
    assert len(inv["children"]["control_plane"]["hosts"]) == 6
    assert inv["vars"]["ansible_user"] == "sovadmin"


def test_cli_rejects_bad_config_before_touching_anything(tmp_path):
    data = copy.deepcopy(RAW)
    data["sites"][0]["subnet"] = "10.210.2.0/24"
    bad = tmp_path / "lab.yaml"
    bad.write_text(yaml.safe_dump(data))
    r = subprocess.run([sys.executable, "-m", "lab", "--config", str(bad), "up"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert f"lab: invalid lab config {bad}:\n" in r.stderr
    assert "  sites[0].subnet: 10.210.2.0/24 overlaps sites[1].subnet" in r.stderr
    assert "Traceback" not in r.stderr
    assert "[lab] node image" not in r.stderr  # failed before any step ran


STACK = DEFAULT_PATH.parents[1] / "infra" / "stacks" / "lab.yaml"


def test_the_labs_machines_are_the_lab_stacks_nodes():
    stack = yaml.safe_load(STACK.read_text())
    cfg = load()
    assert [(s.name, str(s.subnet), [(n.name, n.role, n.rack) for n in s.nodes]) for s in cfg.sites] == [
        (s["name"], s["subnet"], [(n["name"], n["role"], n["rack"]) for n in s["nodes"]]) for s in stack["sites"]]
    stations = {n.name for s in cfg.sites for n in s.nodes if n.memory_mib}
    assert stations == {s["monitoring_node"] for s in stack["sites"]}


def test_a_node_added_to_the_stack_file_is_a_lab_machine(tmp_path):
    stack = yaml.safe_load(STACK.read_text())
    stack["sites"][1]["nodes"].insert(5, {"name": "almaty-w3", "role": "worker", "rack": "r3"})
    (tmp_path / "stack.yaml").write_text(yaml.safe_dump(stack))
    lab = yaml.safe_load(DEFAULT_PATH.read_text())
    lab["sites_from"]["stack"] = "stack.yaml"
    lab["memory_mib"]["worker"] = 512  # within the lab's memory budget with one machine more
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(lab))
    cfg = load(tmp_path / "lab.yaml")
    assert [n.name for n in cfg.site("dc-almaty").nodes][-2:] == ["almaty-w3", "almaty-gw"]
    assert cfg.site("dc-almaty").ip("almaty-w3") == "10.210.2.15"


@pytest.mark.parametrize(("change", "named"), [
    (lambda sf: sf.update(stack="missing.yaml"), "  sites_from.stack: cannot read the sites of"),
    (lambda sf: sf.update(primary="dc-shymkent"), "  sites_from.primary: 'dc-shymkent' is not a site of"),
    (lambda sf: sf.pop("monitoring_node_memory_mib"), "  sites_from: needs exactly the keys"),
])
def test_a_bad_sites_from_is_named(tmp_path, change, named):
    lab = yaml.safe_load(DEFAULT_PATH.read_text())
    lab["sites_from"]["stack"] = str(STACK)
    change(lab["sites_from"])
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(lab))
    with pytest.raises(ConfigError, match=named):
        load(tmp_path / "lab.yaml")


def test_a_lab_wire_overlapping_the_stacks_ranges_is_refused(tmp_path):
    stack = yaml.safe_load(STACK.read_text())
    (tmp_path / "stack.yaml").write_text(yaml.safe_dump(stack))
    lab = yaml.safe_load(DEFAULT_PATH.read_text())
    lab["sites_from"]["stack"] = "stack.yaml"
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(lab))
    load(tmp_path / "lab.yaml")  # positive control: the shipped ranges are clear of each other
    lab["transport"]["subnet"] = stack["clusters"][0]["pod_cidr"]
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(lab))
    with pytest.raises(ConfigError) as e:
        load(tmp_path / "lab.yaml")
    assert "transport.subnet: " in str(e.value) and "clusters[0].pod_cidr" in str(e.value)
