"""Write the OSCAL documents of the catalogue (and of an evidence run) and validate them with compliance-trestle.

Validation, for every document in the directory: trestle reads it into its OSCAL models (the schema: required
fields, id and uuid patterns, value sets), then runs its registered validators (`trestle validate`'s: duplicate
uuids, parties and roles, catalog parameters, back-matter links); trestle's profile resolver resolves the baseline
against the catalog and must give every control of it. Beyond what trestle checks across documents: every control
a component implements or a finding targets is in the catalog, and the catalog reads back into the sovcloud
catalogue model.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from datetime import datetime
from pathlib import Path

from trestle.common import const
from trestle.common.err import TrestleError
from trestle.core import validator_factory
from trestle.core.profile_resolver import ProfileResolver
from trestle.oscal.assessment_results import AssessmentResults
from trestle.oscal.catalog import Catalog
from trestle.oscal.component import ComponentDefinition
from trestle.oscal.profile import Profile

from policies.catalogue import REPO_ROOT, Catalogue, CatalogueError, Discovered
from policies.oscal.assessment import ASSESSMENT_RESULTS, to_assessment_results
from policies.oscal.catalog import CATALOG, PROFILE, from_catalog, statement_id, to_catalog, to_profile
from policies.oscal.components import COMPONENT_DEFINITION, component_definition

MODELS = {CATALOG: Catalog, PROFILE: Profile, COMPONENT_DEFINITION: ComponentDefinition,
          ASSESSMENT_RESULTS: AssessmentResults}
REQUIRED = (CATALOG, PROFILE, COMPONENT_DEFINITION)


class OscalError(ValueError):
    """A document is not valid OSCAL or does not agree with the catalog; the message names file and problem."""


def write(out_dir: Path, cat: Catalogue, catalogue_sha256: str, found: Discovered, when: datetime,
          evidence: dict | None = None, repo_root: Path = REPO_ROOT) -> dict[str, str]:
    """Write catalog, profile, component definition (and the evidence's assessment results), validate them all,
    and return file name -> SHA-256 of what was written."""
    when = when.replace(microsecond=0)
    catalog = to_catalog(cat, catalogue_sha256, when)
    docs = {CATALOG: catalog, PROFILE: to_profile(catalog, when),
            COMPONENT_DEFINITION: component_definition(cat, found, when, repo_root)}
    if evidence is not None:
        docs[ASSESSMENT_RESULTS] = to_assessment_results(evidence)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        doc.oscal_write(out_dir / name)
    validate(out_dir)
    return {name: hashlib.sha256((out_dir / name).read_bytes()).hexdigest() for name in docs}


def _read(path: Path):
    try:
        doc = MODELS[path.name].oscal_read(path)
    except TrestleError as err:
        raise OscalError(f"{path}: not a valid OSCAL {path.stem}: {err}") from None
    # `trestle validate --all`'s validator: every registered one (argparse is how trestle selects it).
    validator = validator_factory.validator_factory.get(argparse.Namespace(mode=const.VAL_MODE_ALL))
    if not validator.model_is_valid(doc, True, None):
        raise OscalError(f"{path}: trestle validation failed: {validator.error_msg()}")
    return doc


def _resolved_ids(profile: Profile, catalog: Catalog) -> set[str]:
    """The control ids trestle's profile resolver gives for the baseline, in a trestle workspace of its own (the
    resolver keeps a cache there) with the catalog where the profile's relative href points."""
    hrefs = [i.href for i in profile.imports]
    if hrefs != [CATALOG]:
        raise OscalError(f"{PROFILE}: imports {hrefs}; the baseline imports {CATALOG} beside it")
    with tempfile.TemporaryDirectory(prefix="sovcloud-oscal-") as tmp:
        root = Path(tmp)
        (root / const.TRESTLE_CONFIG_DIR).mkdir()
        catalog.oscal_write(root / CATALOG)
        workspace_href = f"{const.TRESTLE_HREF_HEADING}{CATALOG}"
        profile.model_copy(update={"imports": [i.model_copy(update={"href": workspace_href})
                                               for i in profile.imports]}).oscal_write(root / PROFILE)
        try:
            resolved = ProfileResolver.get_resolved_profile_catalog(root, str(root / PROFILE))
        except TrestleError as err:
            raise OscalError(f"{PROFILE}: trestle cannot resolve the baseline: {err}") from None
    return {c.id for g in resolved.groups or [] for c in g.controls or []} | {c.id for c in resolved.controls or []}


def validate(out_dir: Path) -> dict[str, object]:
    """Every OSCAL document in `out_dir`, read and validated (OscalError on the first problem), by file name."""
    missing = [name for name in REQUIRED if not (out_dir / name).is_file()]
    if missing:
        raise OscalError(f"{out_dir}: missing {', '.join(missing)}; write them with `python -m policies.oscal`")
    docs = {name: _read(out_dir / name) for name in MODELS if (out_dir / name).is_file()}
    catalog: Catalog = docs[CATALOG]
    try:
        from_catalog(catalog)
    except (CatalogueError, ValueError) as err:
        raise OscalError(f"{out_dir / CATALOG}: does not read back as the sovcloud catalogue: {err}") from None
    ids = {c.id for g in catalog.groups or [] for c in g.controls or []}
    got = _resolved_ids(docs[PROFILE], catalog)
    if got != ids:
        raise OscalError(f"{out_dir / PROFILE}: resolves to {len(got)} controls, the catalog has {len(ids)} "
                         f"(differ: {sorted(got ^ ids)})")
    problems = []
    comp: ComponentDefinition = docs[COMPONENT_DEFINITION]
    for c in comp.components or []:
        for impl in c.control_implementations or []:
            problems += [f"{COMPONENT_DEFINITION}: {c.title} implements {r.control_id}, not in the catalog"
                         for r in impl.implemented_requirements if r.control_id not in ids]
    ar: AssessmentResults | None = docs.get(ASSESSMENT_RESULTS)
    for result in ar.results if ar else []:
        statements = {statement_id(i) for i in ids}
        problems += [f"{ASSESSMENT_RESULTS}: finding {f.title!r} targets {f.target.target_id}, not in the catalog"
                     for f in result.findings or [] if f.target.target_id not in statements]
        for sel in result.reviewed_controls.control_selections:
            problems += [f"{ASSESSMENT_RESULTS}: reviews {s.control_id}, not in the catalog"
                         for s in getattr(sel, "include_controls", None) or [] if s.control_id not in ids]
    if problems:
        raise OscalError(f"{out_dir}: " + "; ".join(problems))
    return docs

