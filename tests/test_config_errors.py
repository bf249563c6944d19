"""One config error for every config module (common/config.py): the stack config (infra), the DR config, the
exporters' configs and the lab config all raise the same ConfigError, report every problem at once as
`path: message` lines under `invalid <what>:`, and name an unreadable file as the field."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import common.config
from common.config import ConfigError, FieldError, join, path, validate
from dr import config as dr_config
from infra import config as infra_config
from lab import config as lab_config
from monitoring.exporters import config as exporter_config
from tests.infra.conftest import lab_data

# `invalid <what>:` then one `  field: message` line per problem, nothing else.
FORMAT = re.compile(r"invalid [^\n]+:(\n  [^\s:][^\n]*?: [^\n]+)+")

LAB_CONFIG = {"name": "cfgtest", "memory_mib": {"control-plane": 512, "worker": 512, "gateway": 256, "s3": 128},
              "internet": {"subnet": "10.240.250.0/24"}, "transport": {"subnet": "10.240.251.0/24"},
              "sites": lab_config.raw()["sites"]}


def _stack(data: dict, tmp_path: Path) -> object:
    """The stack config as the program reads a `sovcloud:cloudFile`: a YAML file, parsed by infra.config."""
    (tmp_path / "stack.yaml").write_text(yaml.safe_dump(data))
    return infra_config.parse(yaml.safe_load((tmp_path / "stack.yaml").read_text()))


def _dr(data: dict, tmp_path: Path) -> object:
    # The files _dr_good names: the DR config refuses keys it cannot read.
    (tmp_path / "w.json").write_text('{"access_key": "a", "secret_key": "s"}')
    (tmp_path / "verify.pem").write_text("a public key\n")
    (tmp_path / "dr.yaml").write_text(yaml.safe_dump(data))
    return dr_config.load_config(tmp_path / "dr.yaml")


def _prober(data: dict, tmp_path: Path) -> object:
    (tmp_path / "prober.yaml").write_text(yaml.safe_dump(data))
    return exporter_config.load("prober", tmp_path / "prober.yaml")


def _lab(data: dict, tmp_path: Path) -> object:
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(data))
    return lab_config.load(tmp_path / "lab.yaml")


def _dr_good() -> dict:
    return {"sites": [{"name": "dc-a", "endpoint": "http://127.0.0.1:1", "credentials_file": "w.json"}],
            "primary": "dc-a", "verify_key_file": "verify.pem", "staging_dir": "staging"}


def _prober_good() -> dict:
    return {"source_site": "dc-astana",
            "targets": [{"site": "dc-almaty", "service": "gateway", "url": "http://127.0.0.1:1/healthz"}]}


def _two_mistakes_stack(d: dict) -> None:
    d["sites"][1]["nodes"][0]["name"] = "Almaty_CP1"
    d["clusters"][0]["pod_cidr"] = "not-a-network"


def _two_mistakes_dr(d: dict) -> None:
    d["sites"][0]["object_lock_mode"] = "GOVERNANCE"
    d["part_size_mib"] = 2


def _two_mistakes_prober(d: dict) -> None:
    d["targets"][0]["url"] = "not a url"
    d["timeout_secs"] = 3


def _two_mistakes_lab(d: dict) -> None:
    d["sites"][1]["nodes"][0]["name"] = "Almaty_CP1"
    d["transport"]["subnet"] = "not-a-network"


# module, a valid config, its loader, two mistakes and the paths they are reported at, the `what` of the error.
CASES: dict[str, tuple[object, Callable[[], dict], Callable, Callable[[dict], None], set[str], str]] = {
    "infra": (infra_config, lab_data, _stack, _two_mistakes_stack,
              {"sites[1].nodes[0].name", "clusters[0].pod_cidr"}, "stack config"),
    "dr": (dr_config, _dr_good, _dr, _two_mistakes_dr,
           {"sites[0].object_lock_mode", "part_size_mib"}, "DR config {file}"),
    "monitoring": (exporter_config, _prober_good, _prober, _two_mistakes_prober,
                   {"targets[0].url", "timeout_secs"}, "prober exporter config {file}"),
    "lab": (lab_config, lambda: copy.deepcopy(LAB_CONFIG), _lab, _two_mistakes_lab,
            {"sites[1].nodes[0].name", "transport.subnet"}, "lab config {file}"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_config_module_raises_the_one_config_error(name, tmp_path):
    module, good, load, _, _, _ = CASES[name]
    assert module.ConfigError is ConfigError  # the name each module exported before is the common type
    load(good(), tmp_path)  # the control: the valid config loads
    data = good()
    data["no_such_field"] = 1
    with pytest.raises(ConfigError) as exc:
        load(data, tmp_path)
    assert type(exc.value) is ConfigError and isinstance(exc.value, ValueError)
    assert exc.value.problems == [("no_such_field", "Extra inputs are not permitted")]


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_file_with_two_mistakes_reports_both_with_their_paths(name, tmp_path):
    _, good, load, mistakes, paths, what = CASES[name]
    data = good()
    mistakes(data)
    with pytest.raises(ConfigError) as exc:
        load(data, tmp_path)
    err = exc.value
    assert {field for field, _ in err.problems} == paths, err.problems
    file = next(iter(tmp_path.glob("*.yaml")))
    assert err.what == what.format(file=file)
    # One format: `invalid <what>:` and one `  field: message` line per problem, in order.
    assert str(err) == f"invalid {err.what}:\n" + "\n".join(f"  {f}: {m}" for f, m in err.problems)
    assert FORMAT.fullmatch(str(err)), str(err)
    assert all(message and not message.startswith("Value error") for _, message in err.problems)


@pytest.mark.parametrize("name", sorted(CASES))
def test_validator_problems_are_named_by_their_field(name, tmp_path):
    """A check across fields (a model validator) reports at a field path too, every problem at once."""
    _, good, load, _, _, _ = CASES[name]
    data = good()
    expected = {
        "infra": lambda: (data["sites"][1].__setitem__("country", "DE"),
                          data["clusters"][0].__setitem__("site", "dc-nowhere"),
                          {"sites[1].country", "clusters[0].site"}),
        "dr": lambda: (data["sites"][0].__setitem__("object_lock_retain_days", 3), data.__setitem__("primary", "x"),
                       {"sites[0].object_lock_retain_days", "primary"}),
        "monitoring": lambda: (data["targets"][0].__setitem__("site", "dc-astana"),
                               data.update(timeout_seconds=20, interval_seconds=10),
                               {"targets[0].site", "timeout_seconds"}),
        "lab": lambda: (data["sites"][0].__setitem__("subnet", data["sites"][1]["subnet"]),
                        data["memory_mib"].__setitem__("worker", 8192),
                        {"sites[0].subnet", "memory_mib"}),
    }[name]()[-1]
    with pytest.raises(ConfigError) as exc:
        load(data, tmp_path)
    assert {field for field, _ in exc.value.problems} == expected, exc.value.problems


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_fields_own_mistake_and_a_check_across_other_fields_come_in_one_report(name, tmp_path):
    """A check across fields runs as soon as the fields it reads parse (common.config.collect), so it does not
    wait for an unrelated field's own mistake to be fixed."""
    _, good, load, _, _, _ = CASES[name]
    data = good()
    expected = {
        "infra": lambda: (data.__setitem__("tenants", [{"name": "egov", "sites": ["dc-astana"], "cpu": "lots"}]),
                          data["clusters"][0].__setitem__("site", "dc-nowhere"),
                          {"tenants[0].cpu", "clusters[0].site"}),
        "dr": lambda: (data.__setitem__("part_size_mib", 2), data.__setitem__("primary", "x"),
                       {"part_size_mib", "primary"}),
        "monitoring": lambda: (data.__setitem__("concurrency", 0), data["targets"][0].__setitem__("site", "dc-astana"),
                               {"concurrency", "targets[0].site"}),
        "lab": lambda: (data.__setitem__("name", "Not A Name"),
                        data["sites"][0].__setitem__("subnet", data["sites"][1]["subnet"]),
                        {"name", "sites[0].subnet"}),
    }[name]()[-1]
    with pytest.raises(ConfigError) as exc:
        load(data, tmp_path)
    assert {field for field, _ in exc.value.problems} == expected, exc.value.problems


FILE_LOADERS = {
    "dr": (dr_config.load_config, "DR config"),
    "monitoring": (lambda p: exporter_config.load("prober", p), "prober exporter config"),
    "lab": (lab_config.load, "lab config"),
}


@pytest.mark.parametrize("name", sorted(FILE_LOADERS))
@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read the {what}: No such file or directory"),
    ("sites: [\n", "not valid YAML at line 2, column 1"),
    ("- a list\n", "must be a YAML mapping of its fields, not a YAML list"),
    ("", "must be a YAML mapping of its fields, not an empty file"),
])
def test_an_unreadable_file_is_the_field_of_its_problem(name, content, says, tmp_path):
    load, what = FILE_LOADERS[name]
    file = tmp_path / "config.yaml"
    if content is not None:
        file.write_text(content)
    with pytest.raises(ConfigError) as exc:
        load(file)
    ((field, message),) = exc.value.problems
    assert field == str(file) and says.format(what=what) in message, message
    assert str(exc.value) == f"invalid {what}:\n  {file}: {message}"


def test_nested_field_errors_and_config_errors_report_below_the_models_path():
    from pydantic import BaseModel, model_validator

    class Inner(BaseModel):
        a: int = 0

        @model_validator(mode="after")
        def _check(self):
            if self.a == 1:
                raise FieldError("a", "must not be 1; use 2")
            if self.a == 3:
                raise ConfigError([("a", "must not be 3"), ("", "the whole inner is wrong")])
            return self

    class Outer(BaseModel):
        items: list[Inner]
        b: int = 0

    with pytest.raises(ConfigError) as exc:
        validate(Outer, {"items": [{"a": 1}, {"a": 3}], "b": "x"}, "test config", prefix="cfg")
    assert exc.value.problems == [
        ("cfg.items[0].a", "must not be 1; use 2"), ("cfg.items[1].a", "must not be 3"),
        ("cfg.items[1]", "the whole inner is wrong"),
        ("cfg.b", "Input should be a valid integer, unable to parse string as an integer")]
    with pytest.raises(ConfigError) as exc:
        validate(Outer, [], "test config")
    assert exc.value.problems[0][0] == "(top level)"


def test_the_helpers():
    assert path(("sites", 1, "nodes", 0, "name")) == "sites[1].nodes[0].name"
    assert join("sites[1]", "", "[0]", "name") == "sites[1][0].name"
    err = ConfigError([("x", "bad")], "test config")
    again = copy.deepcopy(err)  # rebuilt from its problems (as pickling across processes does)
    assert (again.problems, again.what, str(again)) == (err.problems, err.what, "invalid test config:\n  x: bad")
    assert str(ConfigError([("f", "m")])) == "invalid stack config:\n  f: m"  # the default, infra's
    with pytest.raises(TypeError):
        ConfigError("one string is not a list of problems")


def test_the_common_package_needs_only_pydantic_and_pyyaml():
    # It ships to the nodes next to monitoring/ and dr/, whose venv has exactly those.
    source = Path(common.config.__file__).read_text()
    imported = set(re.findall(r"^(?:from|import) ([a-z_]+)", source, re.M))
    assert imported <= {"__future__", "collections", "pathlib", "re", "typing", "yaml", "pydantic"}, imported


class _StackConfig:
    """What infra.program.load_cloud reads of pulumi.Config: a `sovcloud:cloudFile`, no `sovcloud:cloud`."""

    def __init__(self, cloud_file: Path):
        self.cloud_file = cloud_file

    def get_object(self, key: str):
        return None

    def get(self, key: str):
        return str(self.cloud_file) if key == "cloudFile" else None


def test_a_stack_file_that_is_not_yaml_is_named_by_the_program(tmp_path):
    from infra.program import load_cloud

    stack = tmp_path / "stack.yaml"
    stack.write_text(yaml.safe_dump(lab_data()))
    assert load_cloud(_StackConfig(stack)).sites  # the control
    stack.write_text("sites: [\n")
    with pytest.raises(ConfigError) as exc:
        load_cloud(_StackConfig(stack))
    ((field, message),) = exc.value.problems
    assert field == str(stack) and message.startswith("not valid YAML at line 2") and exc.value.what == "stack config"
