"""policies/controls.yaml as an OSCAL catalog, back again, and the sovcloud baseline as a profile.

Mapping (every field of the catalogue survives `from_catalog(to_catalog(cat)) == cat`):

- a control family (NET, DATA, ...) is a group `net`, `data`, ...; a control SC-NET-01 is `sc-net-01` (OSCAL ids
  are tokens; GRC tools sort and match them in lower case), with the sovcloud id as its `label` prop and its
  catalogue position as `sort-id`;
- the English title is the control's title and the English statement its `statement` part; Kazakh and Russian
  are `translation` parts (prop `lang`) carrying that language's title and statement;
- each act or standard of `sources` is a back-matter resource (its title; the other fields as props); a control
  links to each source it cites (`rel=reference`, the note as link text), and the citation itself (ref, note,
  seed doc/line/term) is a group of props `source-N` on the control;
- each check that proves a control is an `assessment-method` part (method TEST; props layer and state
  built/planned) whose prose is the check's name.

Props outside the OSCAL vocabulary carry the namespace NS.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime

from trestle.oscal import OSCAL_VERSION, common
from trestle.oscal import catalog as oscal_catalog
from trestle.oscal import profile as oscal_profile

from policies.catalogue import LANGS, Catalogue, Control, parse_catalogue

NS = "https://sovcloud.kz/ns/oscal"
CATALOG, PROFILE = "catalog.json", "profile.json"
# Group titles of the id families (policies/catalogue.py ID_PATTERN); tests/policies/test_oscal.py checks every
# family of the pattern has one.
FAMILIES = {
    "NET": "Network isolation and transport",
    "DATA": "Data residency and protection",
    "AVL": "Availability",
    "BCK": "Backup and recovery",
    "CRY": "Cryptography",
    "LOG": "Logging and audit",
    "HST": "Host hardening",
    "K8S": "Kubernetes",
    "MON": "Monitoring",
}


def uuid_for(*parts: object) -> str:
    """A UUID that is the same for the same parts: a document made twice from the same input is the same. Its
    bits come from a hash, stamped as version 4: trestle's link validator recognises only v4 UUIDs as references
    to back-matter resources (the OSCAL schema allows v4 and v5)."""
    digest = hashlib.sha256("\x1f".join([NS, *map(str, parts)]).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def oscal_id(control_id: str) -> str:
    return control_id.lower()


def statement_id(control_id: str) -> str:
    return f"{oscal_id(control_id)}_smt"


def prop(name: str, value: object, *, ours: bool = True, group: str | None = None) -> common.Property:
    return common.Property(name=name, value=str(value), ns=NS if ours else None, group=group)


def props_of(items: list[common.Property] | None, name: str | None = None, group: str | None = None) -> list:
    """Our props (namespace NS), optionally only those of one name or group."""
    return [p for p in items or [] if str(p.ns or "") == NS and name in (None, p.name) and group in (None, p.group)]


def metadata(title: str, version: str, when: datetime, props: list[common.Property] | None = None) -> common.Metadata:
    return common.Metadata(title=title, last_modified=when, version=version, oscal_version=OSCAL_VERSION,
                           props=props or None)


def one_line(text: str, where: str) -> str:
    # OSCAL titles, labels and prop values are single lines.
    if "\n" in text.strip():
        raise ValueError(f"{where}: {text[:60]!r}... spans lines; OSCAL needs it on one line (fold it in the YAML)")
    return text.strip()


def _flatten(value: dict, where: str, prefix: str = "") -> list[common.Property]:
    """A model's JSON dump as props named by dotted path (props hold scalars only). A value that is no string
    (a line number, `quoted: false`) is written as JSON with class `json`, so it reads back as what it was."""
    out = []
    for key, v in value.items():
        name = f"{prefix}{key}"
        if isinstance(v, dict):
            out.extend(_flatten(v, where, f"{name}."))
        elif isinstance(v, list):
            raise ValueError(f"{where}.{name}: a list cannot be written as OSCAL props; "
                             "extend policies/oscal/catalog.py")
        elif isinstance(v, str):
            out.append(common.Property(name=name, value=one_line(v, f"{where}.{name}"), ns=NS))
        elif v is not None:
            out.append(common.Property(name=name, value=json.dumps(v), ns=NS, class_="json"))
    return out


def _unflatten(items: list[common.Property]) -> dict:
    out: dict = {}
    for p in items:
        *path, last = p.name.split(".")
        node = out
        for key in path:
            node = node.setdefault(key, {})
        node[last] = json.loads(p.value) if p.class_ == "json" else p.value
    return out


def _family(control_id: str) -> str:
    family = control_id.split("-")[1]
    if family not in FAMILIES:
        raise ValueError(f"{control_id}: family {family} has no group title: add it to FAMILIES in "
                         "policies/oscal/catalog.py")
    return family


def _resource_uuid(ref: str) -> str:
    return uuid_for("source", ref)


def _control(c: Control, position: int, families: dict[str, list]) -> None:
    oid = oscal_id(c.id)
    props = [prop("label", c.id, ours=False), prop("sort-id", f"{position:04d}", ours=False)]
    links = []
    for n, s in enumerate(c.sources, 1):
        links.append(common.Link(href=f"#{_resource_uuid(s.ref)}", rel="reference",
                                 text=one_line(s.note, f"{c.id}.sources[{n}].note") if s.note else None))
        for p in _flatten(s.model_dump(mode="json", exclude_none=True), f"{c.id}.sources[{n}]"):
            props.append(p.model_copy(update={"group": f"source-{n}"}))
    parts = [common.Part(id=statement_id(c.id), name="statement", prose=c.statement.en)]
    for lang in LANGS:
        if lang != "en":
            parts.append(common.Part(id=f"{oid}_{lang}", name="translation", props=[prop("lang", lang)],
                                     title=one_line(c.title.get(lang), f"{c.id}.title.{lang}"),
                                     prose=c.statement.get(lang)))
    n = 0
    for state, checks in (("built", c.checks), ("planned", c.planned)):
        for layer, name in checks.items():
            n += 1
            parts.append(common.Part(id=f"{oid}_asm.{n}", name="assessment-method", prose=name, props=[
                prop("method", "TEST", ours=False), prop("layer", layer), prop("state", state)]))
    control = oscal_catalog.Control(id=oid, title=one_line(c.title.en, f"{c.id}.title.en"), props=props,
                                    links=links, parts=parts)
    families.setdefault(_family(c.id), []).append(control)


def to_catalog(cat: Catalogue, digest: str, when: datetime) -> oscal_catalog.Catalog:
    """The catalogue as an OSCAL catalog; `digest` is the catalogue file's SHA-256 (its version)."""
    families: dict[str, list] = {}
    for position, c in enumerate(cat.controls, 1):
        _control(c, position, families)
    groups = [oscal_catalog.Group2(id=family.lower(), title=FAMILIES[family], props=[prop("label", family, ours=False)],
                                   controls=controls) for family, controls in families.items()]
    resources = []
    for ref, source in cat.sources.items():
        fields = source.model_dump(mode="json", exclude_none=True)
        title = one_line(fields.pop("title"), f"sources.{ref}.title")
        resources.append(common.Resource(
            uuid=_resource_uuid(ref), title=title, citation=common.Citation(text=title),
            props=[prop("label", ref, ours=False), *_flatten(fields, f"sources.{ref}")]))
    return oscal_catalog.Catalog(
        uuid=uuid_for("catalog", digest, when.isoformat()),
        metadata=metadata("sovcloud control catalogue", f"sha256:{digest[:16]}", when,
                          [prop("catalogue-sha256", digest)]),
        groups=groups, back_matter=common.BackMatter(resources=resources))


def _value(items: list[common.Property] | None, name: str, where: str, ours: bool = True) -> str:
    values = [p.value for p in items or [] if p.name == name and (str(p.ns or "") == NS) == ours]
    if len(values) != 1:
        raise ValueError(f"{where}: expected one `{name}` prop, found {values or 'none'}")
    return values[0]


def from_catalog(doc: oscal_catalog.Catalog) -> Catalogue:
    """The sovcloud catalogue an OSCAL catalog made by `to_catalog` describes (validated like controls.yaml:
    a missing text or field is reported as the catalogue's own error)."""
    sources = {}
    by_uuid = {}
    for r in doc.back_matter.resources if doc.back_matter else []:
        ref = _value(r.props, "label", f"back-matter resource {r.uuid}", ours=False)
        by_uuid[r.uuid] = ref
        sources[ref] = {"title": r.title, **_unflatten(props_of(r.props))}
    controls = []
    for group in doc.groups or []:
        for oc in group.controls or []:
            title, statement = {"en": oc.title}, {}
            checks: dict[str, dict[str, list[str]]] = {"built": {}, "planned": {}}
            for p in oc.parts or []:
                where = f"{oc.id} part {p.id}"
                if p.name == "statement":
                    statement["en"] = p.prose
                elif p.name == "translation":
                    lang = _value(p.props, "lang", where)
                    title[lang], statement[lang] = p.title, p.prose
                elif p.name == "assessment-method":
                    state = _value(p.props, "state", where)
                    if state not in checks:
                        raise ValueError(f"{where}: state {state!r} is not one of {', '.join(checks)}")
                    checks[state].setdefault(_value(p.props, "layer", where), []).append(p.prose)
            cited = []
            for n, link in enumerate(oc.links or [], 1):
                fields = _unflatten(props_of(oc.props, group=f"source-{n}"))
                if by_uuid.get(link.href.removeprefix("#")) != fields.get("ref"):
                    raise ValueError(f"{oc.id}: link {n} ({link.href}) is not to source {fields.get('ref')!r}")
                cited.append(fields)
            controls.append((_value(oc.props, "sort-id", oc.id, ours=False), {
                "id": _value(oc.props, "label", oc.id, ours=False), "title": title, "statement": statement,
                "sources": cited, "checks": checks["built"], "planned": checks["planned"]}))
    data = {"sources": sources, "controls": [c for _, c in sorted(controls, key=lambda x: x[0])]}
    return parse_catalogue(data, f"OSCAL catalog {doc.uuid}")


def to_profile(catalog: oscal_catalog.Catalog, when: datetime, href: str = CATALOG) -> oscal_profile.Profile:
    """The sovcloud baseline: every control of the catalog at `href`."""
    return oscal_profile.Profile(
        uuid=uuid_for("profile", catalog.uuid, href),
        metadata=metadata("sovcloud baseline", catalog.metadata.version, when),
        imports=[oscal_profile.Import1(href=href, include_all=common.IncludeAll())],
        merge=oscal_profile.Merge2(as_is=True))

