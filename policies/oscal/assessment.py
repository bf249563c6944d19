"""An evidence run (policies/evidence: the per-control evidence document) as OSCAL assessment results.

One result per run: an observation per check result (a check on one node or site, at its time, with its output
as relevant evidence pointing at the input file it came from, hashed in back-matter), and a finding per control
targeting its statement: `satisfied` only when the control passed. A failed control is `not-satisfied` (reason
fail); a waived or not-run one is `not-satisfied` (reason other) with the waiver or the reason in the remarks,
never counted as a pass, as in the evidence report. The sovcloud status is kept as prop `status`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from trestle.oscal import assessment_results as oscal_ar
from trestle.oscal import common

from policies.oscal.catalog import CATALOG, PROFILE, metadata, oscal_id, prop, statement_id, uuid_for

ASSESSMENT_RESULTS = "assessment-results.json"
# sovcloud status -> (OSCAL objective state, reason).
STATE = {
    "pass": ("satisfied", "pass"),
    "fail": ("not-satisfied", "fail"),
    "waived": ("not-satisfied", "other"),
    "not-run": ("not-satisfied", "other"),
}


def parse_time(text: object, default: datetime) -> datetime:
    """A result's time as an aware datetime (UTC when it names no zone); `default` when it is no time."""
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        return default
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit] or "-"


def to_assessment_results(evidence: dict) -> oscal_ar.AssessmentResults:
    """`evidence`: the document policies.evidence.bundle builds (controls with their checks' results)."""
    generated = parse_time(evidence["generated"], datetime.now(UTC))
    run = (evidence["stack"], evidence["generated"], evidence["catalogue_sha256"])
    inputs = {i["file"]: uuid_for("input", *run, i["file"]) for i in evidence["inputs"]}
    observations: dict[tuple, common.Observation] = {}
    findings = []
    for c in evidence["controls"]:
        related = []
        for k in c["checks"]:
            for r in k["results"]:
                key = (k["layer"], k["check"], r["status"], r["where"], r["when"], r["source"], r["evidence"])
                if key not in observations:
                    where = f" on {r['where']}" if r["where"] else ""
                    observations[key] = common.Observation(
                        uuid=uuid_for("observation", *run, *key), title=_line(f"{k['layer']} check {k['check']}"),
                        description=f"{k['layer']} check {k['check']}: {r['status']}{where}",
                        methods=["TEST"], collected=parse_time(r["when"], generated),
                        props=[prop("layer", k["layer"]), prop("check", _line(k["check"], 1000)),
                               prop("status", r["status"]), *([prop("where", r["where"])] if r["where"] else [])],
                        relevant_evidence=[common.RelevantEvidence(
                            href=f"#{inputs[r['source']]}" if r["source"] in inputs else None,
                            description=r["evidence"].strip() or "no output recorded")])
                related.append(observations[key].uuid)
        state, reason = STATE[c["status"]]
        remarks = None
        if c["status"] == "waived":
            waivers = sorted({r["evidence"].splitlines()[0] for k in c["checks"] for r in k["results"]
                              if r["status"] == "waived" and r["evidence"]})
            remarks = "waived, not passed: " + ("; ".join(waivers) or "no waiver text recorded")
        elif c["status"] == "not-run":
            remarks = "not run: " + " | ".join(c["not_run_because"])
        findings.append(common.Finding(
            uuid=uuid_for("finding", *run, c["id"]), title=_line(f"{c['id']} {c['title']['en']}", 1000),
            description=c["statement"]["en"], props=[prop("label", c["id"], ours=False), prop("status", c["status"])],
            target=common.FindingTarget(type="statement-id", target_id=statement_id(c["id"]),
                                        status=common.ObjectiveStatus(state=state, reason=reason, remarks=remarks)),
            related_observations=[common.RelatedObservation(observation_uuid=u) for u in dict.fromkeys(related)]
            or None))
    times = [o.collected for o in observations.values()] + [generated]
    summary = ", ".join(f"{s} {n}" for s, n in evidence["summary"].items())
    plan = uuid_for("plan", *run)
    resources = [common.Resource(
        uuid=plan, title="sovcloud assessment plan: the checks the catalogue names for each control",
        description="Every control's assessment-method parts in the catalog name the checks that prove it; the "
                    "baseline profile selects every control.",
        rlinks=[common.Rlink(href=CATALOG), common.Rlink(href=PROFILE)])]
    resources += [common.Resource(
        uuid=inputs[i["file"]], title=i["file"], props=[prop("adapter", i["adapter"]), prop("results", i["results"])],
        rlinks=[common.Rlink(href=i["file"], hashes=[common.Hash(algorithm="SHA-256", value=i["sha256"])])])
        for i in evidence["inputs"]]
    result = oscal_ar.Result(
        uuid=uuid_for("result", *run), title=f"sovcloud evidence for stack {evidence['stack']}",
        description=f"Check results of every control of the catalogue on stack {evidence['stack']}: {summary}.",
        start=min(times), end=max(times), props=[prop("stack", evidence["stack"])],
        reviewed_controls=common.ReviewedControls(control_selections=[common.ControlSelections(
            include_controls=[common.SelectControlById(control_id=oscal_id(c["id"])) for c in evidence["controls"]])]),
        observations=list(observations.values()) or None, findings=findings or None,
        remarks=f"{len(evidence['unmatched'])} results matched no check of the catalogue (evidence.json `unmatched`)"
        if evidence["unmatched"] else None)
    return oscal_ar.AssessmentResults(
        uuid=uuid_for("assessment-results", *run),
        metadata=metadata(f"sovcloud evidence: {evidence['stack']}", f"catalogue sha256:{run[2][:16]}", generated,
                          [prop("stack", evidence["stack"])]),
        import_ap=oscal_ar.ImportAp(href=f"#{plan}"), results=[result],
        back_matter=common.BackMatter(resources=resources))
