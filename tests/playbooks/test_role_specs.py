"""Every role's input contract (meta/argument_specs.yml) against what the role reads, and its README (no lab).

Ansible validates a role's `main` argument spec against the variables in scope when the role starts, so the
spec is the contract between infra/ (extra vars and inventory) and the role. These tests keep it whole: every
variable a role's tasks, handlers, templates and defaults read is declared in its spec or set by the role
itself, and every default is declared. A default itself is written once, in defaults/main.yml: the spec declares
none (Ansible never applies a spec's default, so a copy there could only drift). The role's README documents every
option, and the defaults its table shows are defaults/main.yml's (playbooks/gen_role_docs.py writes the table).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import jinja2
import jinja2.meta
import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from toolchain import REPO

ROLES_DIR = REPO / "playbooks" / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks" / "main.yml").is_file())

# Names that are never a role's input: Ansible's magic variables, Jinja's and Ansible's template globals, the
# default loop variable. Every `ansible_*` name (facts, connection variables, magic) is left out as well.
MAGIC = {"groups", "group_names", "hostvars", "inventory_hostname", "inventory_hostname_short", "inventory_dir",
         "inventory_file", "omit", "play_hosts", "playbook_dir", "role_name", "role_names", "role_path",
         "item"}
TEMPLATE_GLOBALS = {"lookup", "query", "q", "now", "undef", "range", "dict", "lipsum", "cycler", "joiner",
                    "namespace", "true", "false", "none", "True", "False", "None"}
# Task keywords whose value is a bare Jinja expression (no braces), or a list of them.
BARE_KEYS = {"when", "that", "failed_when", "changed_when", "until"}
# Spec keys an option may carry (ansible's role argument spec format), but `default`: see spec_defaults.
OPTION_KEYS = {"type", "required", "description", "elements", "options", "choices", "no_log", "version_added"}
# The Default cell of a README's variables table for a default too long to show (playbooks/gen_role_docs.py).
LONG_DEFAULT = "see `defaults/main.yml`"


def _noop(*_args, **_kwargs):
    return None


class _AnyPlugin(dict):
    """Every filter and test name resolves (Ansible's own are plugins): parsing needs only the names' syntax."""

    def get(self, _key, _default=None):
        return _noop

    def __contains__(self, _key):
        return True

    def __getitem__(self, _key):
        return _noop


_ENV = jinja2.Environment(extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])  # noqa: S701 - parse only
_ENV.filters = _AnyPlugin()
_ENV.tests = _AnyPlugin()


def template_names(source: str) -> set[str]:
    """The variables a Jinja template reads (not those it sets itself with set/for, nor attributes, filters,
    tests or string literals)."""
    with warnings.catch_warnings():  # a regex's backslash in a Jinja string literal: Ansible reads it the same way
        warnings.simplefilter("ignore", DeprecationWarning)
        return set(jinja2.meta.find_undeclared_variables(_ENV.parse(source)))


class Reads:
    """What a role reads (name -> first file that reads it) and what it sets itself (register, set_fact, task
    and block vars, loop_var)."""

    def __init__(self):
        self.read: dict[str, str] = {}
        self.set: set[str] = set()

    def add(self, names: Iterable[str], where: str) -> None:
        for name in names:
            self.read.setdefault(name, where)

    def expression(self, expr: object, where: str) -> None:
        if isinstance(expr, str):
            self.add(template_names(expr if "{{" in expr or "{%" in expr else "{{ " + expr + " }}"), where)
        elif isinstance(expr, list):
            for e in expr:
                self.expression(e, where)

    def walk(self, node: object, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in BARE_KEYS:
                    self.expression(value, where)
                    continue
                if key == "loop" and isinstance(value, str) and "{{" not in value:
                    self.expression(value, where)
                    continue
                if key == "register" and isinstance(value, str):
                    self.set.add(value)
                elif str(key).split(".")[-1] == "set_fact" and isinstance(value, dict):
                    self.set.update(k for k in value if k != "cacheable")
                elif key == "vars" and isinstance(value, dict):
                    self.set.update(value)
                elif key == "loop_control" and isinstance(value, dict) and "loop_var" in value:
                    self.set.add(value["loop_var"])
                self.walk(value, where)
        elif isinstance(node, list):
            for value in node:
                self.walk(value, where)
        elif isinstance(node, str) and ("{{" in node or "{%" in node):
            self.add(template_names(node), where)

    def inputs(self) -> dict[str, str]:
        """What the role reads that is neither set by itself nor Ansible's: its inputs (name -> file)."""
        return {n: w for n, w in sorted(self.read.items())
                if n not in self.set and n not in MAGIC and n not in TEMPLATE_GLOBALS
                and not n.startswith("ansible_")}


def role_reads(role: Path) -> Reads:
    reads = Reads()
    for sub in ("defaults", "vars", "tasks", "handlers"):
        for f in sorted((role / sub).glob("*.yml")):
            reads.walk(yaml.safe_load(f.read_text()), str(f.relative_to(role)))
    for f in sorted(p for p in (role / "templates").rglob("*") if p.is_file()):
        reads.add(template_names(f.read_text()), str(f.relative_to(role)))
    return reads


def load_spec(role: Path) -> dict:
    """The `main` entry point of the role's meta/argument_specs.yml."""
    data = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    assert set(data) == {"argument_specs"}, f"{role.name}: argument_specs.yml holds only `argument_specs`"
    assert set(data["argument_specs"]) == {"main"}, f"{role.name}: one entry point, main"
    return data["argument_specs"]["main"]


def load_defaults(role: Path) -> dict:
    f = role / "defaults" / "main.yml"
    return (yaml.safe_load(f.read_text()) or {}) if f.is_file() else {}


def undeclared(role: Path) -> dict[str, str]:
    """Inputs of the role that its spec does not declare (name -> the file that reads it)."""
    options = load_spec(role).get("options") or {}
    return {n: w for n, w in role_reads(role).inputs().items() if n not in options}


def _templated(value: object) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    return False


def spec_defaults(options: dict, prefix: str = "") -> list[str]:
    """The options (nested ones dotted) that declare a `default:` in the spec."""
    found = []
    for name, opt in options.items():
        if "default" in opt:
            found.append(prefix + name)
        found += spec_defaults(opt.get("options") or {}, f"{prefix}{name}.")
    return found


def _check_options(options: dict, where: str) -> None:
    for name, opt in options.items():
        unknown = set(opt) - OPTION_KEYS - {"default"}  # a default is test_spec_declares_no_default's to report
        assert not unknown, f"{where}.{name}: unknown keys {unknown}"
        assert opt.get("type"), f"{where}.{name}: no type (use raw where the value legitimately varies)"
        assert opt.get("description"), f"{where}.{name}: no description"
        if opt.get("options"):
            assert opt["type"] == "dict" or opt.get("elements") == "dict", f"{where}.{name}: options of a non-dict"
            _check_options(opt["options"], f"{where}.{name}")


def test_there_are_roles():
    assert len(ROLES) >= 19, ROLES


@pytest.mark.parametrize("role", ROLES)
def test_spec_is_well_formed(role):
    spec = load_spec(ROLES_DIR / role)
    assert spec.get("short_description") and spec.get("description"), f"{role}: describe the entry point"
    _check_options(spec.get("options") or {}, role)


@pytest.mark.parametrize("role", ROLES)
def test_spec_declares_every_variable_the_role_reads(role):
    missing = undeclared(ROLES_DIR / role)
    assert not missing, (f"{role} reads variables its meta/argument_specs.yml does not declare (name: file): "
                         f"{missing}")


@pytest.mark.parametrize("role", ROLES)
def test_spec_declares_no_default(role):
    found = spec_defaults(load_spec(ROLES_DIR / role).get("options") or {})
    assert not found, (f"{role}: meta/argument_specs.yml declares a `default:` for {', '.join(found)}. The default "
                       "belongs in defaults/main.yml (Ansible never applies a spec's default): remove it from the spec")


@pytest.mark.parametrize("role", ROLES)
def test_spec_declares_every_default(role):
    path = ROLES_DIR / role
    options = load_spec(path).get("options") or {}
    for name in load_defaults(path):
        assert name in options, f"{role}: default {name} (defaults/main.yml) is not declared in meta/argument_specs.yml"
        assert not options[name].get("required"), f"{role}: {name} is required, yet defaults/main.yml gives it a value"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_pass_the_spec(role):
    """What Ansible checks when the role starts, on the role's own (untemplated) defaults."""
    path = ROLES_DIR / role
    options = load_spec(path).get("options") or {}
    values = {k: v for k, v in load_defaults(path).items() if not _templated(v)}
    result = ArgumentSpecValidator({k: options[k] for k in values}).validate(values)
    assert not result.error_messages, f"{role}: {result.error_messages}"


def role_controls(role: Path) -> set[str]:
    """The control ids the role's tasks and handlers are tagged with."""
    ids = set()
    for f in sorted((role / "tasks").glob("*.yml")) + sorted((role / "handlers").glob("*.yml")):
        for task in yaml.safe_load(f.read_text()) or []:
            ids.update(t for t in task.get("tags", []) if t.startswith("SC-"))
    return ids


@pytest.mark.parametrize("role", ROLES)
def test_readme_documents_every_option_and_control(role):
    path = ROLES_DIR / role
    readme = path / "README.md"
    assert readme.is_file(), f"{role}: no README.md"
    text = readme.read_text()
    assert text.splitlines()[0] == f"# {role}", f"{role}/README.md starts with the role's name"
    missing = [n for n in load_spec(path).get("options") or {} if f"`{n}`" not in text]
    assert not missing, f"{role}/README.md does not document {missing}"
    controls = [c for c in sorted(role_controls(path)) if f"**{c}**" not in text]
    assert not controls, f"{role}/README.md does not list the controls its tasks are tagged with: {controls}"


def _cells(row: str) -> list[str]:
    """A markdown table row's cells (an escaped `\\|` stays in its cell, unescaped)."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def readme_default_errors(text: str, options: dict, defaults: dict) -> list[str]:
    """What the README's variables table gets wrong about the defaults: a row's Default cell shows the value of
    defaults/main.yml (a code span that reads back as it with yaml.safe_load), or LONG_DEFAULT, or is empty
    where there is no default; and the table has one row per option. A table without a Default column shows
    no default, so it cannot be wrong about one."""
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("| Variable |")), None)
    if header is None:
        return [] if not options else ["no variables table (`| Variable | ... |`)"]
    columns = _cells(lines[header])
    rows = {}
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(columns, _cells(line), strict=True))
        rows[cells["Variable"].strip("`")] = cells
    errors = [f"{n}: no row" for n in options if n not in rows]
    errors += [f"{n}: a row, but not an option of the spec" for n in rows if n not in options]
    if "Default" not in columns:
        return errors
    for name, cells in rows.items():
        shown = cells["Default"]
        if name not in defaults:
            if shown:
                errors.append(f"{name}: shows the default {shown}, but defaults/main.yml has none")
        elif shown != LONG_DEFAULT:
            if not (len(shown) > 2 and shown[0] == shown[-1] == "`"):
                errors.append(f"{name}: shows no default, but defaults/main.yml has {defaults[name]!r}")
                continue
            try:
                value = yaml.safe_load(shown[1:-1])
            except yaml.YAMLError:
                errors.append(f"{name}: shows {shown}, which is not YAML")
                continue
            if value != defaults[name]:
                errors.append(f"{name}: shows {shown} (which reads as {value!r}), but defaults/main.yml has "
                              f"{defaults[name]!r}")
    return errors


@pytest.mark.parametrize("role", ROLES)
def test_readme_shows_the_defaults_of_defaults_main(role):
    path = ROLES_DIR / role
    errors = readme_default_errors((path / "README.md").read_text(), load_spec(path).get("options") or {},
                                   load_defaults(path))
    assert not errors, f"{role}/README.md (run `python playbooks/gen_role_docs.py`): " + "; ".join(errors)


@pytest.mark.parametrize("role", ROLES)
def test_meta_names_existing_files(role):
    """What meta/main.yml points at (a README, a dependency) exists."""
    path = ROLES_DIR / role
    meta = yaml.safe_load((path / "meta" / "main.yml").read_text()) or {}
    text = (path / "meta" / "main.yml").read_text()
    for ref in re.findall(r"[\w./-]*README[\w.]*", text):
        assert (path / ref).is_file() or (REPO / ref).is_file(), f"{role}/meta/main.yml names {ref}, which is missing"
    for dep in meta.get("dependencies") or []:
        name = dep["role"] if isinstance(dep, dict) else dep
        assert (ROLES_DIR / name / "tasks" / "main.yml").is_file(), f"{role}: dependency {name} is not a role"


def test_detector_finds_an_undeclared_variable(tmp_path):
    """The positive control: a synthetic role that reads variables its spec lacks, in each place the detector
    looks (a task's template, a bare `when`, an assert's `that`, a bare `loop`, a template, a default)."""
    role = tmp_path / "demo"
    for sub in ("tasks", "handlers", "templates", "defaults", "meta"):
        (role / sub).mkdir(parents=True)
    (role / "defaults" / "main.yml").write_text("demo_dir: /srv/{{ demo_site }}\ndemo_port: 80\n")
    (role / "meta" / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    short_description: Demo\n    description: A demo.\n    options:\n"
        "      demo_dir: {type: path, description: Where.}\n"
        "      demo_port: {type: int, description: Port.}\n")
    (role / "tasks" / "main.yml").write_text(
        "- name: Probe {{ demo_port }}\n"
        "  ansible.builtin.command: probe {{ demo_dir }} {{ undeclared_in_task | default('') }}\n"
        "  register: demo_probe\n"
        "  when: demo_probe_enabled and inventory_hostname in groups['all']\n"
        "- name: Remember\n"
        "  ansible.builtin.set_fact:\n"
        "    demo_fact: \"{{ demo_probe.rc }}\"\n"
        "- name: Check\n"
        "  ansible.builtin.assert:\n"
        "    that: [demo_fact | int == 0, undeclared_in_that is defined]\n"
        "- name: Each\n"
        "  ansible.builtin.debug:\n"
        "    msg: \"{{ entry.name }} {{ ansible_host }} {{ lookup('env', 'HOME') }} {{ item_var }}\"\n"
        "  loop: undeclared_loop\n"
        "  loop_control:\n"
        "    loop_var: entry\n"
        "  vars:\n"
        "    item_var: \"{{ entry }}\"\n")
    (role / "templates" / "demo.conf.j2").write_text(
        "{% set local = demo_port %}{% for h in undeclared_in_template %}{{ h.name }} {{ local }}{% endfor %}\n")
    assert undeclared(role) == {"demo_site": "defaults/main.yml", "undeclared_in_task": "tasks/main.yml",
                                "demo_probe_enabled": "tasks/main.yml", "undeclared_in_that": "tasks/main.yml",
                                "undeclared_loop": "tasks/main.yml",
                                "undeclared_in_template": "templates/demo.conf.j2"}
    # ... and the spec is what Ansible checks the role's variables against.
    spec = load_spec(role)
    assert ArgumentSpecValidator(spec["options"]).validate({"demo_port": "not a port"}).error_messages


def test_detector_finds_a_spec_default():
    """The positive control of test_spec_declares_no_default: a default in the spec, at any depth."""
    options = yaml.safe_load(
        "demo_port: {type: int, default: 80, description: Port.}\n"
        "demo_rules:\n"
        "  type: list\n"
        "  elements: dict\n"
        "  description: Rules.\n"
        "  options:\n"
        "    proto: {type: str, default: tcp, description: Protocol.}\n"
        "    port: {type: int, description: Port.}\n"
        "demo_dir: {type: path, description: Where.}\n")
    assert spec_defaults(options) == ["demo_port", "demo_rules.proto"]


def test_readme_check_sees_a_wrong_default():
    """The positive control of test_readme_shows_the_defaults_of_defaults_main: every way a Default cell can
    disagree with defaults/main.yml, including a rendering that reads back as another value (`027` is an int)."""
    options = {n: {"type": "raw", "description": "D."} for n in ("a", "b", "c", "d", "e", "f", "g", "h")}
    defaults = {"a": 80, "b": "027", "c": [1, 2], "d": "{{ x | default('') }}", "e": "x", "f": {"k": 1}}
    good = ("| Variable | Type | Required | Default | Description |\n|---|---|---|---|---|\n"
            '| `a` | raw | no | `80` | D. |\n| `b` | raw | no | `"027"` | D. |\n'
            "| `c` | raw | no | `[1, 2]` | D. |\n| `d` | raw | no | `\"{{ x \\| default('') }}\"` | D. |\n"
            f"| `e` | raw | no | `x` | D. |\n| `f` | raw | no | {LONG_DEFAULT} | D. |\n"
            "| `g` | raw | no |  | D. |\n| `h` | raw | no |  | D. |\n\n## Example\n")
    assert readme_default_errors(good, options, defaults) == []
    bad = (good.replace("`80`", "`8080`").replace('`"027"`', "`027`").replace("`[1, 2]`", "")
           .replace("| `g` | raw | no |  |", "| `g` | raw | no | `1` |").replace("| `h` | raw | no |  | D. |\n", "")
           .replace("`x`", "`{{ x }`"))
    errors = readme_default_errors(bad, options, defaults)
    assert [e.split(":")[0] for e in errors] == ["h", "a", "b", "c", "e", "g"], errors
    assert "reads as 23" in errors[2] and "not YAML" in errors[4]
    # Without a Default column the table shows no default to check; the rows still must match the options.
    no_column = "| Variable | Type | Description |\n|---|---|---|\n| `a` | raw | D. |\n"
    assert readme_default_errors(no_column, {"a": {}}, {"a": 1}) == []
    assert readme_default_errors(no_column, {"a": {}, "b": {}}, {}) == ["b: no row"]
