"""`python -m lab` refuses bad input before it touches podman or a node: a --config that is missing or not YAML,
overlapping networks, a node name `ssh` does not know; each problem named at its field, exit 2, no traceback.
Needs no lab: every call that would reach podman or a node is replaced and must not be reached."""

from __future__ import annotations

import copy
import ipaddress
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import lab.__main__ as cli
from lab import config as lab_config

GOOD = {"name": "clitest", "memory_mib": {"control-plane": 512, "worker": 512, "gateway": 256, "s3": 128},
        "internet": {"subnet": "10.240.250.0/24"}, "transport": {"subnet": "10.240.251.0/24"},
        "sites": lab_config.raw()["sites"]}
NODES = [n["name"] for s in GOOD["sites"] for n in s["nodes"]]


def _networks(data: dict) -> list[str]:
    """Every network of the config as the field that names it."""
    return [f"sites[{i}].subnet" for i in range(len(data["sites"]))] + ["internet.subnet", "transport.subnet"]


def _get(data: dict, field: str) -> str:
    return data["sites"][int(field[6])]["subnet"] if field.startswith("sites[") else data[field.split(".")[0]]["subnet"]


def _set(data: dict, field: str, value: str) -> None:
    if field.startswith("sites["):
        data["sites"][int(field[6])]["subnet"] = value
    else:
        data[field.split(".")[0]]["subnet"] = value


def _run(data: dict | str | None, argv: list[str]) -> tuple[int, mock.Mock, mock.Mock]:
    """main() with `data` as --config (a mapping, raw text, or None: a file that does not exist), everything that
    would reach podman or a node replaced; the exit code and the replaced ssh and podman calls."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.yaml"
        if data is not None:
            path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        with mock.patch.object(cli.subprocess, "run", return_value=mock.Mock(returncode=0)) as run, \
                mock.patch.object(cli, "ssh_args", return_value=["ssh"]), \
                mock.patch.object(cli.api, "status", side_effect=AssertionError("reached podman")) as status:
            return cli.main(["--config", str(path), *argv]), run, status


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(NODES), st.lists(st.text(max_size=8), max_size=2))
def test_ssh_to_a_known_node_runs_ssh(node, command):
    code, run, _ = _run(GOOD, ["ssh", node, *command])
    assert code == 0 and run.call_args.args[0] == ["ssh", *command]


def _overlap(data: dict, draw) -> str:
    a, b = draw(st.lists(st.sampled_from(_networks(data)), min_size=2, max_size=2, unique=True))
    inside = ipaddress.ip_network(_get(data, b))
    prefix = draw(st.integers(max(inside.prefixlen - 2, 8), 26))
    _set(data, a, str(ipaddress.ip_network(f"{inside.network_address}/{prefix}", strict=False)))
    nets = _networks(data)
    return nets[min(nets.index(a), nets.index(b))]  # an overlap is named at the first network of the pair


def _duplicate_node(data: dict, draw) -> str:
    i = draw(st.integers(1, len(data["sites"]) - 1))
    data["sites"][i]["nodes"][0]["name"] = data["sites"][0]["nodes"][0]["name"]
    return "sites[].nodes[].name"


def _bad_subnet(data: dict, draw) -> str:
    field = draw(st.sampled_from(_networks(data)))
    _set(data, field, draw(st.sampled_from(["10.240.250.0/33", "not-a-network", "10.1.2.3/24"])))
    return field


MISTAKES = {"overlap": _overlap, "duplicate-node": _duplicate_node, "bad-subnet": _bad_subnet}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(MISTAKES)), st.sampled_from([["ssh", NODES[0]], ["status"]]), st.data())
def test_one_config_mistake_is_named_and_nothing_runs(mistake, argv, draw):
    data = copy.deepcopy(GOOD)
    field = MISTAKES[mistake](data, draw.draw)
    with pytest.raises(lab_config.ConfigError) as exc:
        lab_config.parse(data)
    assert field in [f for f, _ in exc.value.problems], exc.value.problems
    code, run, status = _run(data, argv)
    assert code == 2 and not run.called and not status.called


def test_overlapping_networks_are_each_named(capsys):
    data = copy.deepcopy(GOOD)
    data["internet"]["subnet"] = data["sites"][0]["subnet"]
    data["transport"]["subnet"] = "10.0.0.0/8"  # holds every site's network
    assert _run(data, ["status"])[0] == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("lab: invalid lab config ") and len(err) == 1 + 2 * len(data["sites"]), err
    assert f"  sites[0].subnet: {data['sites'][0]['subnet']} overlaps internet.subnet" in err[1]
    assert all("overlaps transport.subnet 10.0.0.0/8: give each network its own range" in line
               for line in err if "transport" in line)


@pytest.mark.parametrize(("data", "says"), [
    (None, "cannot read the lab config: No such file or directory; check the path"),
    ("sites: [\n", "not valid YAML at line 2, column 1"),
    ("[]\n", "the lab config must be a YAML mapping of its fields, not a YAML list"),
])
def test_a_config_that_cannot_be_read_is_one_line(data, says, capsys):
    code, run, status = _run(data, ["ssh", NODES[0]])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and not run.called and not status.called
    assert err[0] == "lab: invalid lab config:" and says in err[1] and len(err) == 2, err


def test_ssh_to_an_unknown_node_names_the_argument_and_connects_nowhere(capsys):
    code, run, _ = _run(GOOD, ["ssh", "astana-cp9", "uptime"])
    assert code == 2 and not run.called
    assert capsys.readouterr().err.splitlines() == [
        "lab: invalid python -m lab ssh arguments:",
        f"  NODE: no node named 'astana-cp9' in the lab; use one of {NODES}"]


def test_no_traceback_from_the_command_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "lab", "--config", str(tmp_path / "missing.yaml"), "status"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.splitlines()[0] == "lab: invalid lab config:"
