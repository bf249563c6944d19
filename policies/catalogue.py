"""The control catalogue (policies/controls.yaml) as validated data, and discovery of the checks that
prove each control in the repo (Prometheus alerts, audit/chart tests, policy-pack policies, DR drills).

`python -m policies.catalogue [--repo DIR]` prints the control x layer matrix, coverage and every mismatch
between the catalogue and the repo; it exits 1 on a mismatch (a named check that does not exist, a check that
tags an unknown id or is not listed) and 2 on an invalid catalogue.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from common.config import TOP, ConfigError, FieldError, problems_of, read_yaml_mapping
from common.config import path as field_path

REPO_ROOT = Path(__file__).resolve().parent.parent
CATALOGUE_PATH = Path(__file__).resolve().parent / "controls.yaml"

LANGS = ("kk", "ru", "en")
ID_PATTERN = r"^SC-(NET|DATA|AVL|BCK|CRY|LOG|HST|K8S|MON)-\d{2}$"
# Control ids as they appear inside free text (policy descriptions, label values).
ID_IN_TEXT = re.compile(r"SC-(?:NET|DATA|AVL|BCK|CRY|LOG|HST|K8S|MON)-\d{2}")

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class CatalogueError(ConfigError):
    """The catalogue file is invalid: every problem as (field, fix), in the format of every product config."""

    def __init__(self, problems, what: str = "control catalogue"):
        super().__init__(problems, what)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Localized(_Strict):
    kk: NonEmpty
    ru: NonEmpty
    en: NonEmpty

    def get(self, lang: str) -> str:
        return getattr(self, lang)


class SeedQuote(_Strict):
    """A line of a seed document (`<doc>_*.txt` in ../shared/seeds from the repo root) and Kazakh words on it."""

    doc: Annotated[str, StringConstraints(pattern=r"^\d{3}$")]
    line: Annotated[int, Field(gt=0)]
    # Verbatim Kazakh wording that stands on exactly this line (tests/policies checks it against the seeds).
    term: NonEmpty


class SourceKind(StrEnum):
    ACT = "act"  # a Kazakh act the seed documents name (where: `named`)
    DOCUMENT = "document"  # a seed document itself, quoted for what its author writes
    EXTERNAL = "external"  # a standard or an act outside the seed documents, cited by section


class Source(_Strict):
    title: NonEmpty
    kk: NonEmpty
    kind: SourceKind
    # The seed document whose text this source is (Resolution 269 is 004, the 2024 master's project 001): every
    # quote of it comes from that document. An act without one is only restated by others (832 in 001).
    doc: Annotated[str, StringConstraints(pattern=r"^\d{3}$")] | None = None
    # For an act: the seed line that names it (its title in a list of normative references).
    named: SeedQuote | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Source:
        if self.kind is SourceKind.ACT and self.named is None:
            raise FieldError("named", "an act needs `named: {doc, line, term}`: the seed line that names it")
        if self.kind is not SourceKind.ACT and self.named is not None:
            raise FieldError("named", f"only an act is `named` by the seeds; remove it from this {self.kind} source")
        if self.kind is SourceKind.DOCUMENT and self.doc is None:
            raise FieldError("doc", 'a document source needs `doc`: the number of its seed file (e.g. "001")')
        if self.kind is SourceKind.EXTERNAL and self.doc is not None:
            raise FieldError("doc", "an external source is no seed document; remove `doc`")
        return self


class SourceRef(_Strict):
    """One reason for a control: a quoted seed line, an act the seeds only name, or a section of an external source.

    `note` says what the cited line or section itself says, and no more; an act cited without a quote says so with
    `quoted: false` (and its note names the topic on which no provision is quoted).
    """

    ref: NonEmpty
    note: NonEmpty
    seed: SeedQuote | None = None
    quoted: Literal[False] | None = None

    @model_validator(mode="after")
    def _quote_or_not(self) -> SourceRef:
        if self.seed is not None and self.quoted is not None:
            raise FieldError("quoted", "a reference with `seed` is a quote: remove `quoted: false`")
        return self


class Checks(_Strict):
    pulumi_policy: list[NonEmpty] = []
    chart: list[NonEmpty] = []
    audit: list[NonEmpty] = []
    alert: list[NonEmpty] = []
    drill: list[NonEmpty] = []

    def items(self) -> Iterator[tuple[str, str]]:
        for layer in LAYERS:
            for name in getattr(self, layer):
                yield layer, name

    def count(self, layer: str | None = None) -> int:
        return sum(1 for got, _ in self.items() if layer in (None, got))


# The check layers, in the order the catalogue, the matrix and the evidence list them: Checks' fields.
LAYERS: tuple[str, ...] = tuple(Checks.model_fields)


class Control(_Strict):
    id: Annotated[str, StringConstraints(pattern=ID_PATTERN)]
    title: Localized
    statement: Localized
    sources: Annotated[list[SourceRef], Field(min_length=1)]
    checks: Checks = Checks()
    # Checks a layer has not built yet: documented intent, never counted as coverage.
    planned: Checks = Checks()

    @model_validator(mode="after")
    def _planned_is_not_built(self) -> Control:
        both = set(self.checks.items()) & set(self.planned.items())
        if both:
            raise ValueError(f"checks listed both under `checks` and `planned`: {sorted(both)}; keep one")
        return self


class Catalogue(_Strict):
    sources: dict[str, Source]
    controls: Annotated[list[Control], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> Catalogue:
        seen: set[str] = set()
        for c in self.controls:
            if c.id in seen:
                raise ValueError(f"duplicate control id {c.id}: every id appears once")
            seen.add(c.id)
        problems = [
            (f"controls[{i}].sources[{j}]", problem)
            for i, c in enumerate(self.controls)
            for j, s in enumerate(c.sources)
            if (problem := self._ref_problem(c.id, s))
        ]
        if problems:
            raise ConfigError(problems)
        return self

    def _ref_problem(self, cid: str, s: SourceRef) -> str | None:
        """What is wrong with how `s` cites its source, and the fix; None when nothing is."""
        src = self.sources.get(s.ref)
        if src is None:
            known = ", ".join(sorted(self.sources))
            return f"{cid}: source ref {s.ref!r} is not defined under `sources` (known: {known})"
        if src.kind is SourceKind.EXTERNAL and (s.seed or s.quoted is not None):
            return f"{cid}: {s.ref} is external to the seeds: cite its section in `note`, without `seed` or `quoted`"
        if src.kind is SourceKind.DOCUMENT and s.seed is None:
            return f"{cid}: {s.ref} is a seed document: quote its line with `seed: {{doc, line, term}}`"
        if src.kind is SourceKind.ACT and s.seed is None and s.quoted is None:
            return (f"{cid}: {s.ref} is cited without a quote: add `seed: {{doc, line, term}}`, or `quoted: false` "
                    "with a note saying that no provision on the topic is quoted")
        if s.seed and src.doc and s.seed.doc != src.doc:
            return f"{cid}: {s.ref} is seed document {src.doc}; a quote of it cannot come from document {s.seed.doc}"
        return None

    def by_id(self) -> dict[str, Control]:
        return {c.id: c for c in self.controls}

    def named_checks(self) -> dict[tuple[str, str], list[str]]:
        """(layer, check) -> control ids, for the counted (non-planned) checks."""
        out: dict[tuple[str, str], list[str]] = {}
        for c in self.controls:
            for key in c.checks.items():
                out.setdefault(key, []).append(c.id)
        return out


def _with_hint(error: dict, message: str) -> str:
    """The fix for the mistakes a catalogue author makes most."""
    loc = error["loc"]
    if error["type"] == "missing" and loc and loc[-1] in LANGS:
        return f"{message} (every text needs kk, ru and en: add `{loc[-1]}`)"
    if error["type"] == "string_pattern_mismatch" and loc and loc[-1] == "id":
        return f"{message} (ids look like SC-NET-01)"
    if error["type"] == "extra_forbidden":
        layers = "checks" in loc or "planned" in loc
        hint = f" (unknown key; allowed layers: {', '.join(LAYERS)})" if layers else " (unknown key: remove it)"
        return message + hint
    return message


def parse_catalogue(data: object, origin: str = "<data>") -> Catalogue:
    try:
        return Catalogue.model_validate(data)
    except ValidationError as err:
        # A validator's own ConfigError may carry several problems: hints go to pydantic's built-in errors only.
        builtin = {field_path(e["loc"]) or TOP: e for e in err.errors() if e["type"] != "value_error"}
        problems = [(f, _with_hint(builtin[f], m) if f in builtin else m) for f, m in problems_of(err)]
        raise CatalogueError(problems, f"control catalogue {origin}") from None


def load_catalogue(path: Path | str = CATALOGUE_PATH) -> Catalogue:
    try:
        data = read_yaml_mapping(path, "control catalogue")
    except ConfigError as err:
        raise CatalogueError(err.problems, err.what) from None
    return parse_catalogue(data, str(path))


# --- discovery -----------------------------------------------------------------------------------


@dataclass
class Found:
    """A check that exists in the repo and the control ids it says it proves."""

    layer: str
    name: str
    controls: set[str] = field(default_factory=set)
    origin: str = ""


Discovered = dict[str, dict[str, Found]]


def _add(out: dict[str, Found], layer: str, name: str, controls: Iterable[str], origin: str) -> None:
    f = out.setdefault(name, Found(layer, name, origin=origin))
    f.controls.update(controls)


def discover_alerts(repo_root: Path) -> dict[str, Found]:
    """Alerting rules in monitoring/prometheus/rules/*.yml whose `controls` label lists ids."""
    out: dict[str, Found] = {}
    rules_dir = repo_root / "monitoring" / "prometheus" / "rules"
    for path in sorted([*rules_dir.glob("*.yml"), *rules_dir.glob("*.yaml")]):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise CatalogueError([(str(path), f"not valid YAML: {err}; fix the rule file")], "alert rules") from None
        for group in doc.get("groups") or []:
            for rule in group.get("rules") or []:
                if "alert" not in rule:
                    continue
                label = (rule.get("labels") or {}).get("controls", "")
                ids = ID_IN_TEXT.findall(label if isinstance(label, str) else " ".join(map(str, label)))
                _add(out, "alert", rule["alert"], ids, str(path.relative_to(repo_root)))
    return out


def _marker_ids(node: ast.expr) -> list[str] | None:
    """Control ids of a `pytest.mark.control("SC-..", ...)` expression, else None."""
    if not isinstance(node, ast.Call):
        return None
    f = node.func
    if not (isinstance(f, ast.Attribute) and f.attr == "control"):
        return None
    # `pytest.mark.control(...)` or `mark.control(...)` after `from pytest import mark`.
    v = f.value
    is_mark = (isinstance(v, ast.Attribute) and v.attr == "mark") or (
        isinstance(v, ast.Name) and v.id == "mark"
    )
    if not is_mark:
        return None
    ids: list[str] = []
    for a in node.args:
        for sub in ast.walk(a):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                ids.extend(ID_IN_TEXT.findall(sub.value))
    return ids


def _ids_from(exprs: Iterable[ast.expr]) -> list[str]:
    ids: list[str] = []
    for e in exprs:
        candidates = e.elts if isinstance(e, ast.List | ast.Tuple) else [e]
        for c in candidates:
            got = _marker_ids(c)
            if got:
                ids.extend(got)
    return ids


def discover_marked_tests(repo_root: Path, test_dir: str, layer: str) -> dict[str, Found]:
    """Tests under `test_dir` marked `@pytest.mark.control(...)`, keyed by pytest node id.

    Read with ast, not imported: audit tests need testinfra hosts and chart tests need helm, and
    discovery must work without either.
    """
    out: dict[str, Found] = {}
    base = repo_root / test_dir
    for path in sorted(base.rglob("test_*.py")) if base.is_dir() else []:
        rel = path.relative_to(repo_root).as_posix()
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as err:
            raise CatalogueError([(str(path), f"cannot parse: {err}; fix the test file")], "marked tests") from None
        module_ids: list[str] = []
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets
            ):
                module_ids.extend(_ids_from([stmt.value]))

        def visit(body: list[ast.stmt], prefix: str, inherited: list[str], rel: str = rel) -> None:
            for stmt in body:
                if isinstance(stmt, ast.ClassDef) and stmt.name.startswith("Test"):
                    cls_ids = list(inherited) + _ids_from(stmt.decorator_list)
                    for s in stmt.body:
                        if isinstance(s, ast.Assign) and any(
                            isinstance(t, ast.Name) and t.id == "pytestmark" for t in s.targets
                        ):
                            cls_ids.extend(_ids_from([s.value]))
                    visit(stmt.body, f"{prefix}{stmt.name}::", cls_ids)
                elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name.startswith(
                    "test"
                ):
                    ids = inherited + _ids_from(stmt.decorator_list)
                    if ids:
                        _add(out, layer, f"{rel}::{prefix}{stmt.name}", ids, f"{rel}:{stmt.lineno}")

        visit(tree.body, "", module_ids)
    return out


def _walk_objects(value: object, depth: int = 0) -> Iterator[object]:
    yield value
    if depth < 2 and isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from _walk_objects(v, depth + 1)
    elif depth < 2 and isinstance(value, dict):
        for v in value.values():
            yield from _walk_objects(v, depth + 1)


def _import_package_modules(repo_root: Path, package: str) -> Iterator[object]:
    """Import every module of `package` (except __main__, which serves/runs) and yield it."""
    pkg_dir = repo_root.joinpath(*package.split("."))
    if not (pkg_dir / "__init__.py").is_file():
        return
    if str(repo_root) not in sys.path:
        sys.path.insert(0, str(repo_root))
    for path in sorted(pkg_dir.rglob("*.py")):
        if path.name == "__main__.py" or "tests" in path.relative_to(pkg_dir).parts:
            continue
        parts = path.relative_to(repo_root).with_suffix("").parts
        mod_name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield importlib.import_module(mod_name)


def policies_in(mod: object) -> Iterator[tuple[str, list[str]]]:
    """(policy name, control ids) of the pulumi-policy objects a module defines.

    A policy proves the controls in its `controls` attribute if it has one, else the control ids
    written in its description (pulumi-policy objects carry no custom fields).
    """
    from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy

    for value in list(vars(mod).values()):
        for obj in _walk_objects(value):
            if isinstance(obj, ResourceValidationPolicy | StackValidationPolicy):
                ids = getattr(obj, "controls", None) or ID_IN_TEXT.findall(obj.description or "")
                yield obj.name, list(ids)


def drills_in(mod: object) -> Iterator[tuple[str, list[str]]]:
    """(drill check name, control ids) from a module-level `DRILL_CHECKS` mapping name -> ids."""
    checks = getattr(mod, "DRILL_CHECKS", None)
    if isinstance(checks, dict):
        for name, ids in checks.items():
            yield name, ID_IN_TEXT.findall(ids) if isinstance(ids, str) else list(ids)


def _discover_declared(repo_root: Path, package: str, layer: str,
                       declared: Callable[[object], Iterator[tuple[str, list[str]]]]) -> dict[str, Found]:
    out: dict[str, Found] = {}
    for mod in _import_package_modules(repo_root, package):
        for name, ids in declared(mod):
            _add(out, layer, name, ids, mod.__name__)
    return out


def discover_policies(repo_root: Path) -> dict[str, Found]:
    """Policies of the Pulumi policy pack (policies/pack), keyed by policy name."""
    return _discover_declared(repo_root, "policies.pack", "pulumi_policy", policies_in)


def discover_drills(repo_root: Path) -> dict[str, Found]:
    """Drill checks declared by the dr/ package."""
    return _discover_declared(repo_root, "dr", "drill", drills_in)


def discover_checks(repo_root: Path | str = REPO_ROOT) -> Discovered:
    """layer -> check name -> Found, for the checks that exist in the repo right now.

    Every discoverer returns nothing for a layer that is not built yet.
    """
    root = Path(repo_root).resolve()
    return {
        "pulumi_policy": discover_policies(root),
        "chart": discover_marked_tests(root, "tests/charts", "chart"),
        "audit": discover_marked_tests(root, "tests/audit", "audit"),
        "alert": discover_alerts(root),
        "drill": discover_drills(root),
    }


# --- consistency -----------------------------------------------------------------------------------


@dataclass
class Consistency:
    covered: list[str]  # controls with >= 1 named check that exists
    uncovered: list[str]  # controls with no existing check (planned only)
    missing: list[str]  # "control: layer check" named in the catalogue but not in the repo
    unknown_ids: list[str]  # checks in the repo naming an id the catalogue lacks
    unlisted: list[str]  # checks in the repo not named by the catalogue under their controls
    planned: int  # planned checks (not counted)

    def summary(self) -> str:
        total = len(self.covered) + len(self.uncovered)
        return (
            f"controls covered: {len(self.covered)}/{total}; planned only: {len(self.uncovered)} "
            f"({', '.join(self.uncovered) or '-'}); planned checks: {self.planned}"
        )


def check_consistency(cat: Catalogue, found: Discovered) -> Consistency:
    ids = set(cat.by_id())
    covered, uncovered, missing = [], [], []
    for c in cat.controls:
        exists = False
        for layer, name in c.checks.items():
            f = found[layer].get(name)
            if f is None:
                missing.append(f"{c.id}: {layer} check {name!r} not found in the repo")
            elif c.id not in f.controls:
                missing.append(f"{c.id}: {layer} check {name!r} exists but is not tagged {c.id} ({f.origin})")
            else:
                exists = True
        (covered if exists else uncovered).append(c.id)
    named = cat.named_checks()
    unknown, unlisted = [], []
    for layer, checks in found.items():
        for name, f in sorted(checks.items()):
            if not f.controls:
                unknown.append(f"{layer} check {name!r} ({f.origin}) names no control id")
            for cid in sorted(f.controls - ids):
                unknown.append(f"{layer} check {name!r} ({f.origin}) names unknown control {cid}")
            for cid in sorted(f.controls & ids):
                if cid not in named.get((layer, name), []):
                    unlisted.append(f"{cid}: {layer} check {name!r} ({f.origin}) is not in the catalogue")
    planned = sum(c.planned.count() for c in cat.controls)
    return Consistency(covered, uncovered, missing, unknown, unlisted, planned)


def _checks_yaml(key: str, checks: dict[str, list[str]]) -> list[str]:
    if not any(checks.values()):
        return [f"    {key}: {{}}"]
    lines = [f"    {key}:"]
    for layer in LAYERS:
        if checks.get(layer):
            lines.append(f"      {layer}:")
            lines.extend(f"        - {name}" for name in checks[layer])
    return lines


def sync_catalogue(path: Path, found: Discovered) -> str:
    """Catalogue text with each control's `checks` set to the checks found in the repo that tag it, and
    those checks dropped from `planned`. Rewrites only the trailing checks/planned keys of each control
    (they must be its last two keys), so comments and wording elsewhere survive."""
    cat = load_catalogue(path)
    text = path.read_text(encoding="utf-8")
    blocks = re.split(r"(?m)^(?=  - id: )", text)
    by_id = cat.by_id()
    out = [blocks[0]]
    for block in blocks[1:]:
        cid = block.split("\n", 1)[0].removeprefix("  - id: ").strip()
        control = by_id[cid]
        checks: dict[str, list[str]] = {
            layer: sorted(n for n, f in found[layer].items() if cid in f.controls) for layer in LAYERS
        }
        planned = {
            layer: [n for n in getattr(control.planned, layer) if n not in checks[layer]] for layer in LAYERS
        }
        head, sep, _ = block.partition("\n    checks:")
        if not sep:
            raise CatalogueError([(f"controls[{cid}]", "has no `checks:` key to sync: add `checks: {}`")],
                                 f"control catalogue {path}")
        trailer = "\n\n" if block.endswith("\n\n") else "\n"
        out.append(
            head
            + "\n"
            + "\n".join(_checks_yaml("checks", checks) + _checks_yaml("planned", planned))
            + trailer
        )
    return "".join(out)


TITLE_WIDTH = 44


def _cell(built: int, planned: int) -> str:
    return (str(built) if built else "-") + (f" +{planned}p" if planned else "")


def matrix_rows(cat: Catalogue) -> list[list[str]]:
    """The control x layer matrix: a header, one row per control (id, English title, a cell per layer, total) and
    a total row. A cell counts the checks `checks` names; `+Np` adds N planned ones, never counted."""
    header = ["control", "title", *LAYERS, "total"]
    rows = [header]
    for c in cat.controls:
        title = c.title.en if len(c.title.en) <= TITLE_WIDTH else c.title.en[: TITLE_WIDTH - 1] + "…"
        cells = [_cell(c.checks.count(layer), c.planned.count(layer)) for layer in LAYERS]
        rows.append([c.id, title, *cells, _cell(c.checks.count(), c.planned.count())])
    sums = [_cell(sum(c.checks.count(layer) for c in cat.controls), sum(c.planned.count(layer) for c in cat.controls))
            for layer in LAYERS]
    total = _cell(sum(c.checks.count() for c in cat.controls), sum(c.planned.count() for c in cat.controls))
    rows.append(["total", f"{len(cat.controls)} controls", *sums, total])
    return rows


def format_matrix(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
        .rstrip()
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(-1, lines[1])
    lines.append("cells: checks the catalogue names per layer ('-': none); +Np: N planned, not counted")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m policies.catalogue", description=__doc__)
    ap.add_argument("--repo", type=Path, default=REPO_ROOT)
    ap.add_argument("--catalogue", type=Path, default=CATALOGUE_PATH)
    ap.add_argument(
        "--sync",
        action="store_true",
        help="rewrite `checks` to the checks found in the repo (planned ones that exist move over)",
    )
    args = ap.parse_args(argv)
    try:
        if args.sync:
            args.catalogue.write_text(
                sync_catalogue(args.catalogue, discover_checks(args.repo)), encoding="utf-8"
            )
        cat = load_catalogue(args.catalogue)
        res = check_consistency(cat, discover_checks(args.repo))
    except CatalogueError as err:
        print(err, file=sys.stderr)
        return 2
    print(format_matrix(matrix_rows(cat)))
    print(res.summary())
    for title, items in (("missing", res.missing), ("unknown", res.unknown_ids), ("unlisted", res.unlisted)):
        for item in items:
            print(f"{title}: {item}")
    return 1 if res.missing or res.unknown_ids or res.unlisted else 0


if __name__ == "__main__":
    raise SystemExit(main())
