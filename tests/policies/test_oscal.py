"""The catalogue, the implementing artefacts and an audit run as OSCAL: valid for compliance-trestle (its models,
its validators, its `trestle validate` on a trestle workspace), and the catalogue round-trips through the catalog."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from trestle.oscal.assessment_results import AssessmentResults
from trestle.oscal.catalog import Catalog

from policies.catalogue import CATALOGUE_PATH, ID_PATTERN, LANGS, Catalogue, CatalogueError, load_catalogue
from policies.oscal import documents
from policies.oscal.__main__ import main
from policies.oscal.catalog import FAMILIES, from_catalog
from policies.oscal.components import UNKNOWN, Artefact, to_component_definition
from tests.policies.test_evidence import _audit_report

TRESTLE = Path(sys.executable).parent / "trestle"
DOCS = ("catalog.json", "profile.json", "component-definition.json", "assessment-results.json")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, Catalogue]:
    """The documents as `python -m policies.oscal` writes them for one audit run (the audit's audit.json), and the
    catalogue they were written from (a copy of the repo's: what the documents must give back)."""
    reports = _audit_report(tmp_path_factory.mktemp("reports"))
    catalogue = tmp_path_factory.mktemp("catalogue") / "controls.yaml"
    catalogue.write_bytes(CATALOGUE_PATH.read_bytes())
    out = tmp_path_factory.mktemp("oscal")
    argv = ["--out", str(out), "--results", str(reports / "audit.json"), "--catalogue", str(catalogue)]
    assert main([*argv, "--stack", "lab"]) == 0
    return out, load_catalogue(catalogue)


def _doc(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text(encoding="utf-8"))


def _copy(src: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in DOCS:
        (dest / name).write_bytes((src / name).read_bytes())
    return dest


def _trestle(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TRESTLE), *args], cwd=workspace, capture_output=True, text=True, timeout=600,
                          check=False)


def test_documents_pass_trestle_validate_in_a_trestle_workspace(written, tmp_path):
    """What a compliance team does with them: a trestle workspace holding them, `trestle validate`; and the same
    refuses a catalog whose control id is no OSCAL token."""
    out, _ = written
    assert _trestle(tmp_path, "init").returncode == 0
    for name, folder in zip(DOCS, ("catalogs", "profiles", "component-definitions", "assessment-results"),
                            strict=True):
        (tmp_path / folder / "sovcloud").mkdir()
        (tmp_path / folder / "sovcloud" / name).write_bytes((out / name).read_bytes())
    r = _trestle(tmp_path, "validate", "-a")
    assert r.returncode == 0, r.stdout + r.stderr
    valid = re.findall(r"VALID: Model \S+/(\S+)/sovcloud/\S+ passed", r.stdout + r.stderr)
    assert sorted(valid) == ["assessment-results", "catalogs", "component-definitions", "profiles"]
    # Every back-matter resource is referenced (trestle warns otherwise).
    assert "WARNING" not in r.stdout + r.stderr
    (tmp_path / "catalogs" / "bad").mkdir()
    (tmp_path / "catalogs" / "bad" / "catalog.json").write_text(
        (out / "catalog.json").read_text(encoding="utf-8").replace('"id": "sc-net-01"', '"id": "sc net 01"'),
        encoding="utf-8")
    r = _trestle(tmp_path, "validate", "-t", "catalog", "-n", "bad")
    assert r.returncode != 0 and "sc net 01" in r.stdout + r.stderr, r.stdout + r.stderr


def test_validate_refuses_a_document_trestle_refuses(written, tmp_path):
    bad = _copy(written[0], tmp_path / "bad")
    (bad / "catalog.json").write_text((bad / "catalog.json").read_text().replace('"id": "sc-net-01"', '"id": "x y"'))
    with pytest.raises(documents.OscalError, match=r"catalog.json: not a valid OSCAL catalog"):
        documents.validate(bad)


def test_validate_reads_every_document_with_the_trestle_models(written, capsys):
    out, _ = written
    docs = documents.validate(out)
    assert list(docs) == list(DOCS)
    assert isinstance(docs["catalog.json"], Catalog) and isinstance(docs["assessment-results.json"], AssessmentResults)
    assert main(["--validate", str(out)]) == 0 and "valid OSCAL" in capsys.readouterr().out


def test_catalogue_round_trips_through_the_oscal_catalog(written):
    out, cat = written
    back = from_catalog(Catalog.oscal_read(out / "catalog.json"))
    assert back == cat  # every control: id, title and statement in kk/ru/en, sources with their citations, checks
    # And concretely, as a GRC tool shows it: the lowercase id, the sovcloud id as label, the three languages.
    doc = _doc(out, "catalog.json")["catalog"]
    first = cat.controls[0]
    control = next(c for g in doc["groups"] for c in g["controls"] if c["id"] == first.id.lower())
    assert {"name": "label", "value": first.id} in control["props"]
    assert control["title"] == first.title.en
    texts = {p["props"][0]["value"]: (p["title"], p["prose"]) for p in control["parts"] if p["name"] == "translation"}
    assert texts == {lang: (first.title.get(lang), first.statement.get(lang)) for lang in LANGS if lang != "en"}
    titles = {r["props"][0]["value"]: r["title"] for r in doc["back-matter"]["resources"]}
    assert titles == {ref: s.title for ref, s in cat.sources.items()}


def _edited(written: Path, tmp_path: Path, edit) -> Path:
    out = _copy(written[0], tmp_path / "edited")
    doc = _doc(out, "catalog.json")
    edit(doc["catalog"])
    (out / "catalog.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return out


def test_a_control_missing_from_the_catalog_fails(written, tmp_path):
    cat = written[1]
    gone = "SC-NET-01"  # implemented by the gateway role, the charts and the pack

    def drop(doc: dict) -> None:
        for g in doc["groups"]:
            g["controls"] = [c for c in g["controls"] if c["id"] != gone.lower()]

    out = _edited(written, tmp_path, drop)
    back = from_catalog(Catalog.oscal_read(out / "catalog.json"))
    assert back != cat and set(cat.by_id()) - set(back.by_id()) == {gone}
    with pytest.raises(documents.OscalError, match=r"ansible-role internet_gateway implements sc-net-01, not in the "
                       r"catalog.*finding 'SC-NET-01 [^']*' targets sc-net-01_smt, not in the catalog"):
        documents.validate(out)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["groups"][0]["controls"][0]["parts"].pop(1), "title.kk: Field required"),
    (lambda c: c["groups"][0]["controls"][0]["props"].pop(0), "sc-net-01: expected one `label` prop, found none"),
    (lambda c: c["groups"][0]["controls"][0]["parts"].pop(0), "controls[0].statement.en: Field required"),
])
def test_a_catalog_that_loses_a_field_does_not_read_back(written, tmp_path, edit, message):
    out = _edited(written, tmp_path, edit)
    with pytest.raises((CatalogueError, ValueError), match=re.escape(message)):
        from_catalog(Catalog.oscal_read(out / "catalog.json"))
    with pytest.raises(documents.OscalError, match="does not read back as the sovcloud catalogue"):
        documents.validate(out)


def test_a_changed_title_does_not_round_trip(written, tmp_path):
    def retitle(doc: dict) -> None:
        doc["groups"][0]["controls"][0]["parts"][1]["title"] += " (өзгертілген)"

    back = from_catalog(Catalog.oscal_read(_edited(written, tmp_path, retitle) / "catalog.json"))
    assert back != written[1] and back.controls[0].title.kk.endswith("(өзгертілген)")


def test_every_id_family_has_a_group_title():
    families = re.search(r"\((.*?)\)", ID_PATTERN).group(1).split("|")
    assert sorted(families) == sorted(FAMILIES)


def test_components_implement_what_the_roles_charts_and_pack_declare(written):
    from policies.pack.rules import POLICIES

    comps = {c["title"]: c for c in _doc(written[0], "component-definition.json")["component-definition"]["components"]}
    # The repo's artefacts and the catalogue agree: no component names a control the catalogue lacks.
    assert not [(t, c["remarks"]) for t, c in comps.items() if UNKNOWN in c.get("remarks", "")]

    def implemented(title: str) -> dict[str, str]:
        return {r["control-id"]: r["description"] for i in comps[title].get("control-implementations", [])
                for r in i["implemented-requirements"]}

    gateway = implemented("ansible-role internet_gateway")
    assert "sc-net-01" in gateway and "tasks/main.yml: Write the gateway firewall (SC-NET-01)" in gateway["sc-net-01"]
    assert set(implemented("pulumi-policy-pack sovcloud")) == {c.lower() for p in POLICIES for c in p.controls}
    tenant = implemented("helm-chart tenant")
    assert "proved by tests/charts/test_tenant.py::test_rbac_namespaced_least_privilege" in tenant["sc-k8s-02"]
    assert "templates/networkpolicies.yaml" in tenant["sc-net-03"]
    # A role that tags no control implements none and is not a component.
    assert "ansible-role sovcloud_agents" not in comps and "ansible-role hardening_common" in comps


def test_a_control_outside_the_catalogue_is_named_not_implemented():
    cat = load_catalogue()
    a = Artefact("ansible-role", "software", "demo", "playbooks/roles/demo", "demo role")
    a.add(cat.controls[0].id, "tasks/main.yml: a task")
    a.add("SC-NET-99", "tasks/main.yml: a typo")
    (comp,) = to_component_definition(cat, [a], datetime(2026, 1, 2, tzinfo=UTC)).components
    assert [r.control_id for r in comp.control_implementations[0].implemented_requirements] == [
        cat.controls[0].id.lower()]
    assert comp.remarks == f"{UNKNOWN} SC-NET-99"


def test_assessment_results_mark_failed_controls_not_satisfied(written):
    ar = _doc(written[0], "assessment-results.json")["assessment-results"]
    (result,) = ar["results"]
    findings = {f["target"]["target-id"]: f["target"]["status"] for f in result["findings"]}
    # tests/policies/test_evidence.py's audit report: SC-HST-05 passed everywhere, SC-HST-08 failed on n2, SC-HST-07
    # was waived on n2 (a waiver is no pass), the rest has no result.
    assert findings["sc-hst-05_smt"] == {"state": "satisfied", "reason": "pass"}
    assert findings["sc-hst-08_smt"] == {"state": "not-satisfied", "reason": "fail"}
    assert findings["sc-hst-07_smt"]["state"] == "not-satisfied"
    assert findings["sc-hst-07_smt"]["remarks"].startswith("waived, not passed: waived by sec@x until 2027-06-30")
    assert findings["sc-net-01_smt"]["state"] == "not-satisfied" and "not run" in findings["sc-net-01_smt"]["remarks"]
    assert len(findings) == len(written[1].controls)
    # One observation per check result (9: n/a is none), each with the run's time and its node.
    obs = {o["uuid"]: o for o in result["observations"]}
    assert len(obs) == 9 and {o["collected"] for o in obs.values()} == {"2025-01-02T03:04:05+00:00"}
    failed = [o for o in obs.values() if {"name": "status", "ns": "https://sovcloud.kz/ns/oscal", "value": "fail"}
              in o["props"]]
    assert len(failed) == 1 and "test_SC_HST_08_modules_blacklisted" in failed[0]["title"]
    hst08 = next(f for f in result["findings"] if f["target"]["target-id"] == "sc-hst-08_smt")
    assert failed[0]["uuid"] in {r["observation-uuid"] for r in hst08["related-observations"]}
