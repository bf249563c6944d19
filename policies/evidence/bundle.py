"""Build and verify a signed evidence bundle: evidence.json, evidence.json.sig, signer.pem, report.html, and the
run's OSCAL documents in oscal/ (catalog, baseline profile, component definition, assessment results), whose
SHA-256 digests evidence.json lists, so the one signature covers them too."""

from __future__ import annotations

import difflib
import hashlib
import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from policies.catalogue import CATALOGUE_PATH, REPO_ROOT, Catalogue, discover_checks, load_catalogue
from policies.evidence import report, signing
from policies.evidence.results import STATUSES, CheckResult, read_results
from policies.oscal import documents as oscal

# /2: evidence.json lists the OSCAL documents of the run (`oscal`: bundle path -> SHA-256).
FORMAT = "sovcloud-evidence/2"
EVIDENCE, SIGNATURE, SIGNER, REPORT = "evidence.json", "evidence.json.sig", "signer.pem", "report.html"
OSCAL_DIR = "oscal"
GENERATED = "%Y-%m-%dT%H:%M:%SZ"


class VerifyError(ValueError):
    """The bundle does not verify; the message says which file and why."""


def _worst(statuses: list[str]) -> str:
    # Strict: a check/control passes only when everything that proves it ran and passed; a waived
    # failure (audit waiver: owner, reason, expiry) is shown as such, never as a pass.
    if "fail" in statuses:
        return "fail"
    if not statuses or "not-run" in statuses:
        return "not-run"
    return "waived" if "waived" in statuses else "pass"


def _not_run_because(checks: list[dict]) -> list[str]:
    """Why a control is not run: each of its checks without a result in the inputs, or whose results say
    it did not run (a skipped test, with the skip's own reason)."""
    why = []
    for k in checks:
        if not k["results"]:
            why.append(f"{k['layer']} check {k['check']}: no result among the inputs (run it and add its "
                       "output to --results)")
        elif k["status"] == "not-run":
            reasons = sorted({(r["evidence"] or "no reason given").strip()[:200] for r in k["results"]
                              if r["status"] == "not-run"})
            why.append(f"{k['layer']} check {k['check']}: did not run: {'; '.join(reasons)}")
    return why


def evaluate(cat: Catalogue, results: list[CheckResult], lang: str) -> tuple[list[dict], list[dict]]:
    """Per-control status and evidence, and the results no catalogue check claims."""
    by_check: dict[tuple[str, str], list[CheckResult]] = {}
    for r in results:
        by_check.setdefault((r.layer, r.check), []).append(r)
    used: set[tuple[str, str]] = set()
    controls = []
    for c in cat.controls:
        checks = []
        for layer, name in c.checks.items():
            rs = sorted(by_check.get((layer, name), []), key=lambda r: (r.where, r.when))
            used.add((layer, name))
            checks.append(
                {
                    "layer": layer,
                    "check": name,
                    "status": _worst([r.status for r in rs]),
                    "results": [
                        {k: v for k, v in r.to_dict().items() if k not in ("layer", "check")} for r in rs
                    ],
                }
            )
        when = max((r["when"] for k in checks for r in k["results"]), default=None)
        where = sorted({r["where"] for k in checks for r in k["results"] if r["where"]})
        sources = []
        for s in c.sources:
            src = cat.sources[s.ref]
            text = f"{s.ref}: {src.kk if lang == 'kk' else src.title}"
            sources.append(text + (f" ({s.note})" if s.note else ""))
        status = _worst([k["status"] for k in checks])
        controls.append(
            {
                "id": c.id,
                "title": c.title.model_dump(),
                "statement": c.statement.model_dump(),
                "status": status,
                "not_run_because": _not_run_because(checks) if status == "not-run" else [],
                "when": when,
                "where": where,
                "checks": checks,
                "sources": sources,
            }
        )
    unmatched = [r.to_dict() for r in results if (r.layer, r.check) not in used]
    return controls, unmatched


def catalogue_digest(catalogue_path: Path) -> str:
    """The catalogue file's SHA-256: the evidence names the catalogue it was judged against by it."""
    return hashlib.sha256(catalogue_path.read_bytes()).hexdigest()


def collect(
    results_dir: Path,
    stack: str,
    lang: str,
    repo_root: Path = REPO_ROOT,
    catalogue_path: Path = CATALOGUE_PATH,
) -> tuple[Catalogue, dict]:
    """The catalogue and the evidence document of the results (unsigned, without its OSCAL documents)."""
    if lang not in report.LABELS:
        raise ValueError(f"--lang {lang!r}: choose one of {', '.join(report.LABELS)}")
    if not stack or not stack.replace("-", "").isalnum():
        raise ValueError(f"--stack {stack!r}: use a stack name like `lab` (letters, digits, dashes)")
    cat = load_catalogue(catalogue_path)
    results, inputs = read_results(results_dir, repo_root)
    controls, unmatched = evaluate(cat, results, lang)
    summary = {s: sum(1 for c in controls if c["status"] == s) for s in STATUSES}
    return cat, {
        "format": FORMAT,
        "stack": stack,
        "lang": lang,
        "generated": datetime.now(UTC).strftime(GENERATED),
        "catalogue_sha256": catalogue_digest(catalogue_path),
        "summary": summary,
        "controls": controls,
        "unmatched": unmatched,
        "inputs": inputs,
    }


def build(
    results_dir: Path,
    out_dir: Path,
    stack: str,
    lang: str,
    key: Path,
    cert: Path,
    repo_root: Path = REPO_ROOT,
    catalogue_path: Path = CATALOGUE_PATH,
) -> dict:
    cat, evidence = collect(results_dir, stack, lang, repo_root, catalogue_path)
    signer = signing.load_cert(cert, "--cert")
    if why := signing.validity_problem(signer):
        raise signing.SignatureError(f"--cert {cert}: the signer certificate {why}")
    with tempfile.TemporaryDirectory(prefix="sovcloud-evidence-") as staging:
        # Written and validated (compliance-trestle) aside: nothing reaches --out unless the signing works.
        digests = oscal.write(Path(staging), cat, evidence["catalogue_sha256"], discover_checks(repo_root),
                              datetime.strptime(evidence["generated"], GENERATED).replace(tzinfo=UTC), evidence,
                              repo_root)
        evidence["oscal"] = {f"{OSCAL_DIR}/{name}": digest for name, digest in sorted(digests.items())}
        data = signing.canonical(evidence)
        sig = signing.sign(data, key)
        # Check the signature with the certificate before writing: a key/cert mismatch fails here.
        try:
            signing.verify(data, sig, signer)
        except signing.SignatureError:
            raise signing.SignatureError(f"--key {key} does not belong to --cert {cert}") from None
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out_dir / OSCAL_DIR, ignore_errors=True)
        shutil.copytree(staging, out_dir / OSCAL_DIR)
    (out_dir / EVIDENCE).write_text(
        json.dumps(evidence, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    (out_dir / SIGNATURE).write_bytes(sig + b"\n")
    (out_dir / SIGNER).write_bytes(cert.read_bytes())
    (out_dir / REPORT).write_bytes(report.render(evidence).encode("utf-8"))
    return evidence


def verify(bundle: Path, ca_cert: Path) -> dict:
    """Raise VerifyError unless the signature, signer chain, HTML and OSCAL documents all match evidence.json."""
    try:
        evidence = json.loads((bundle / EVIDENCE).read_text(encoding="utf-8"))
        sig = (bundle / SIGNATURE).read_bytes()
        # Bytes, not text: text mode would turn a \r the evidence carries (SSH's stderr) into \n.
        html = (bundle / REPORT).read_bytes().decode("utf-8")
    except (OSError, ValueError) as err:
        raise VerifyError(f"{bundle}: incomplete or unreadable bundle: {err}") from None
    try:
        signer = signing.load_cert(bundle / SIGNER, "signer.pem")
        ca = signing.load_cert(ca_cert, "--ca-cert")
        signing.verify_chain(signer, ca)
        signing.verify(signing.canonical(evidence), sig, signer)
    except signing.SignatureError as err:
        raise VerifyError(f"{bundle / EVIDENCE}: {err}") from None
    if evidence.get("format") != FORMAT:
        raise VerifyError(f"{bundle / EVIDENCE}: format {evidence.get('format')!r} is not {FORMAT!r}")
    members = evidence.get("oscal") or {}
    if not all(f"{OSCAL_DIR}/{name}" in members for name in oscal.MODELS):
        raise VerifyError(f"{bundle / EVIDENCE}: lists OSCAL documents {sorted(members)}; a bundle carries "
                          f"{', '.join(oscal.MODELS)} under {OSCAL_DIR}/")
    unsigned = sorted(p.relative_to(bundle).as_posix() for p in (bundle / OSCAL_DIR).rglob("*")
                      if p.is_file() and p.relative_to(bundle).as_posix() not in members)
    if unsigned:
        raise VerifyError(f"{bundle / OSCAL_DIR}: {', '.join(unsigned)} not in the signed evidence.json: remove it")
    for name, digest in sorted(members.items()):
        try:
            got = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
        except OSError as err:
            raise VerifyError(f"{bundle / name}: listed in the signed evidence.json but unreadable: {err}") from None
        if got != digest:
            raise VerifyError(f"{bundle / name}: does not match the signed evidence.json (SHA-256 {got}, signed "
                              f"{digest})")
    expected = report.render(evidence)
    if html != expected:
        diff = next(
            (
                d
                for d in difflib.unified_diff(expected.splitlines(), html.splitlines(), lineterm="", n=0)
                if d[:1] in "+-" and not d.startswith(("+++", "---"))
            ),
            "",
        )
        raise VerifyError(
            f"{bundle / REPORT}: does not match the signed evidence.json (first change: {diff[:200]})"
        )
    return evidence
