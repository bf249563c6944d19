"""The artefacts that implement the controls, as one OSCAL component definition.

One document with a component per artefact: a GRC tool imports the platform's components at once, each keeps its
own uuid, and every one implements controls of the same catalog through the same baseline (profile.json).

- an Ansible role (playbooks/roles/<role>) implements the controls its tasks and handlers are tagged with; the
  requirement says which tasks (the tags ansible-playbook --tags selects by); a role tagging no control implements
  none and is left out;
- a Helm chart (charts/<chart>) implements the controls its templates and values name in their comments, and the
  controls of the chart tests (tests/charts, `@pytest.mark.control`) whose module renders or installs it;
- the Pulumi policy pack (policies/pack) implements the controls of its policies (`POLICIES`, `.controls`).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import yaml
from trestle.oscal import component as oscal_component

from policies.catalogue import ID_IN_TEXT, REPO_ROOT, Catalogue, Discovered
from policies.oscal.catalog import PROFILE, metadata, oscal_id, prop, uuid_for

COMPONENT_DEFINITION = "component-definition.json"
UNKNOWN = "Names controls the catalogue does not have (not listed as implemented):"


class Artefact:
    """An implementing artefact: its kind, name, what it is, and control id -> how it implements it."""

    def __init__(self, kind: str, type_: str, name: str, path: str, description: str):
        self.kind, self.type, self.name, self.path, self.description = kind, type_, name, path, description
        self.how: dict[str, list[str]] = {}

    def add(self, control_id: str, line: str) -> None:
        lines = self.how.setdefault(control_id, [])
        if line not in lines:
            lines.append(line)


def _tasks(items: object, inherited: tuple[str, ...] = ()):
    """(task, tags) of a tasks file, into blocks (a block's tags apply to its tasks)."""
    for task in items if isinstance(items, list) else []:
        if not isinstance(task, dict):
            continue
        raw = task.get("tags") or []
        tags = inherited + tuple([raw] if isinstance(raw, str) else raw)
        nested = [task[k] for k in ("block", "rescue", "always") if k in task]
        if nested:
            for body in nested:
                yield from _tasks(body, tags)
        elif not any(k.endswith(("import_tasks", "include_tasks")) for k in task):
            # An import only carries its file's tags there; that file's tasks are read themselves.
            yield task, tags


def roles(repo_root: Path) -> list[Artefact]:
    out = []
    for role_dir in sorted((repo_root / "playbooks" / "roles").iterdir()):
        meta = role_dir / "meta" / "main.yml"
        info = (yaml.safe_load(meta.read_text(encoding="utf-8")) or {}).get("galaxy_info", {}) if meta.is_file() else {}
        a = Artefact("ansible-role", "software", role_dir.name, f"playbooks/roles/{role_dir.name}",
                     info.get("description") or f"Ansible role {role_dir.name}")
        for f in sorted([*role_dir.glob("tasks/*.yml"), *role_dir.glob("handlers/*.yml")]):
            rel = f.relative_to(role_dir).as_posix()
            for task, tags in _tasks(yaml.safe_load(f.read_text(encoding="utf-8"))):
                for cid in ID_IN_TEXT.findall(" ".join(map(str, tags))):
                    a.add(cid, f"{rel}: {task.get('name') or 'unnamed task'}")
        if a.how:
            out.append(a)
    return out


# A template or values comment: the text after `#` or inside `{{/* */}}`.
_COMMENT = re.compile(r"(?:#|\{\{-?\s*/\*)\s*(.*?)\s*(?:\*/\s*-?\}\})?$")


def charts(repo_root: Path, found: Discovered) -> list[Artefact]:
    out = []
    for chart_yaml in sorted((repo_root / "charts").glob("*/Chart.yaml")):
        chart_dir = chart_yaml.parent
        meta = yaml.safe_load(chart_yaml.read_text(encoding="utf-8")) or {}
        name = meta.get("name") or chart_dir.name
        a = Artefact("helm-chart", "software", name, f"charts/{chart_dir.name}",
                     " ".join(str(meta.get("description") or f"Helm chart {name}").split()))
        for f in sorted([*chart_dir.glob("templates/*"), chart_dir / "values.yaml"]):
            if not f.is_file():
                continue
            for line in f.read_text(encoding="utf-8").splitlines():
                m = _COMMENT.search(line)
                for cid in ID_IN_TEXT.findall(m.group(1) if m else ""):
                    a.add(cid, f"{f.relative_to(chart_dir).as_posix()}: {m.group(1)}")
        # The chart tests name the chart they render by the conftest constant (TENANT) or its path.
        uses = re.compile(rf"\b{re.escape(chart_dir.name.upper())}\b|charts/{re.escape(chart_dir.name)}\b")
        for check, f in sorted(found.get("chart", {}).items()):
            module = repo_root / check.split("::")[0]
            if module.is_file() and uses.search(module.read_text(encoding="utf-8")):
                for cid in sorted(f.controls):
                    a.add(cid, f"proved by {check}")
        if a.how:
            out.append(a)
    return out


def policy_pack(repo_root: Path) -> list[Artefact]:
    from policies.pack.rules import POLICIES  # pulumi-policy loads only when a document needs the pack

    pack = yaml.safe_load((repo_root / "policies" / "pack" / "PulumiPolicy.yaml").read_text(encoding="utf-8"))
    a = Artefact("pulumi-policy-pack", "validation", "sovcloud", "policies/pack",
                 pack.get("description") or "sovcloud Pulumi policy pack")
    for p in POLICIES:
        for cid in p.controls:
            a.add(cid, f"policy {p.name} ({p.enforcement_level.value}): {p.description}")
    return [a]


def artefacts(repo_root: Path, found: Discovered) -> list[Artefact]:
    return [*roles(repo_root), *charts(repo_root, found), *policy_pack(repo_root)]


def to_component_definition(cat: Catalogue, arts: list[Artefact], when: datetime,
                            profile_href: str = PROFILE) -> oscal_component.ComponentDefinition:
    """A component per artefact, implementing the controls of `cat` it names. An id the catalogue lacks (a typo,
    or a catalogue narrower than the repo's) is no requirement: the component's remarks name it
    (tests/policies/test_oscal.py keeps the repo's artefacts and catalogue in step)."""
    order = list(cat.by_id())
    components = []
    for a in arts:
        requirements = [
            oscal_component.ImplementedRequirement(
                uuid=uuid_for(a.kind, a.name, cid), control_id=oscal_id(cid), props=[prop("label", cid, ours=False)],
                description="\n".join(a.how[cid]))
            for cid in sorted(set(a.how) & set(order), key=order.index)
        ]
        unknown = sorted(set(a.how) - set(order))
        components.append(oscal_component.DefinedComponent(
            uuid=uuid_for(a.kind, a.name), type=a.type, title=f"{a.kind} {a.name}", description=a.description,
            props=[prop("kind", a.kind), prop("path", a.path)],
            control_implementations=[oscal_component.ControlImplementation(
                uuid=uuid_for(a.kind, a.name, "implementation"), source=profile_href,
                description=f"Controls of the sovcloud baseline that {a.path} implements",
                implemented_requirements=requirements)] if requirements else None,
            remarks=f"{UNKNOWN} {', '.join(unknown)}" if unknown else None))
    digest = hashlib.sha256(json.dumps([c.model_dump(mode="json") for c in components], sort_keys=True)
                            .encode()).hexdigest()
    return oscal_component.ComponentDefinition(
        uuid=uuid_for("component-definition", digest, when.isoformat()),
        metadata=metadata("sovcloud platform components", f"sha256:{digest[:16]}", when),
        components=components)


def component_definition(cat: Catalogue, found: Discovered, when: datetime,
                         repo_root: Path = REPO_ROOT) -> oscal_component.ComponentDefinition:
    return to_component_definition(cat, artefacts(repo_root, found), when)
