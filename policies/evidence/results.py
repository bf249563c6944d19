"""Check results: one simple record format and adapters that turn tool outputs into it.

Native format (`*.results.json`), what every adapter produces:

    {"format": "sovcloud-results/1",
     "results": [{"layer": "audit", "check": "tests/audit/test_ssh.py::test_x",
                  "status": "pass" | "fail" | "waived" | "not-run", "evidence": "text",
                  "when": "2025-01-01T00:00:00Z", "where": "site-a/node1"}]}

Adapters, chosen by content: pytest JUnit XML (`*.xml`), pytest-json-report JSON (`tests[].nodeid`),
the compliance audit's `audit.json` (tests/audit: per node, with waivers), promtool `test rules` output
(`*.txt`/`*.log` with "Unit Testing:"), restore-drill JSON (the shared `drills/<site>/latest.json`
format), and the Pulumi engine event log (`*.jsonl`) of `pulumi preview --policy-pack policies/pack
--event-log FILE` (a hidden flag: set PULUMI_DEBUG_COMMANDS=true), whose policy summaries list the
policies each resource passed and failed.

Ignored, and listed as such in the inputs: HTML files (reports for people) and the audit's
`audit-junit.xml` beside its `audit.json` (the same run; the JSON also carries waivers and `n/a`).
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET  # noqa: S405 - parses our own pytest reports, not untrusted input
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from dr import layout

STATUSES = ("pass", "fail", "waived", "not-run")
NATIVE_FORMAT = "sovcloud-results/1"
# Drill JSON without a `checks` list proves this single drill check.
DEFAULT_DRILL_CHECK = "restore-drill"


class ResultsError(ValueError):
    """An input file cannot be read as check results; the message names the file, field and fix."""


@dataclass(frozen=True)
class CheckResult:
    layer: str
    check: str
    status: str
    evidence: str
    when: str
    where: str
    source: str  # input file name it came from

    def to_dict(self) -> dict:
        return asdict(self)


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _layer_of(node_path: str) -> str:
    # Test layer follows the directory contract: tests/audit -> audit, tests/charts -> chart.
    if node_path.startswith("tests/audit/"):
        return "audit"
    if node_path.startswith("tests/charts/"):
        return "chart"
    return "pytest"


_PARAM = re.compile(r"^(?P<base>[^\[]+)(\[(?P<param>.*)\])?$")


def _split_param(name: str) -> tuple[str, str]:
    m = _PARAM.match(name)
    assert m is not None
    return m.group("base"), m.group("param") or ""


def _where_from_param(param: str, default: str) -> str:
    # testinfra parametrises by host ("ssh://node1", "paramiko://root@node1"): that is "where".
    m = re.search(r"(?:\w+://)?(?:[^@/\-\s]+@)?([A-Za-z0-9_.:-]+)", param) if "://" in param else None
    # Pytest joins further parameter ids with "-": drop the dangling separator.
    return m.group(1).rstrip("-") if m else (param or default)


def _junit_nodeid(classname: str, name: str) -> str:
    parts = classname.split(".")
    mod_idx = max((i for i, p in enumerate(parts) if p.startswith("test_")), default=len(parts) - 1)
    path = "/".join(parts[: mod_idx + 1]) + ".py"
    return "::".join([path, *parts[mod_idx + 1 :], name])


def parse_junit(path: Path) -> list[CheckResult]:
    try:
        root = ET.parse(path).getroot()  # noqa: S314 - see import
    except ET.ParseError as err:
        raise ResultsError(f"{path}: not valid JUnit XML: {err}") from None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if root.tag not in ("testsuite", "testsuites"):
        raise ResultsError(f"{path}: root element <{root.tag}> is not <testsuites>/<testsuite>")
    out = []
    for suite in suites:
        when = suite.get("timestamp") or _mtime(path)
        host = suite.get("hostname", "")
        for case in suite.iter("testcase"):
            if not case.get("classname") or not case.get("name"):
                raise ResultsError(f"{path}: <testcase> without classname/name attributes")
            base, param = _split_param(case.get("name", ""))
            nodeid = _junit_nodeid(case.get("classname", ""), base)
            bad = case.find("failure")
            if bad is None:
                bad = case.find("error")
            skipped = case.find("skipped")
            if bad is not None:
                status = "fail"
                evidence = (bad.get("message") or bad.text or "failed").strip()
            elif skipped is not None:
                status = "not-run"
                evidence = "skipped: " + (skipped.get("message") or "").strip()
            else:
                status = "pass"
                evidence = f"passed in {float(case.get('time') or 0):.2f}s"
            out.append(
                CheckResult(
                    _layer_of(nodeid),
                    nodeid,
                    status,
                    evidence[:2000],
                    when,
                    _where_from_param(param, host),
                    path.name,
                )
            )
    return out


_JSON_OUTCOME = {
    "passed": "pass",
    "failed": "fail",
    "error": "fail",
    "skipped": "not-run",
    "xfailed": "fail",
    "xpassed": "fail",
}


def parse_pytest_json(path: Path, doc: dict) -> list[CheckResult]:
    created = doc.get("created")
    when = (
        datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(created, int | float)
        else _mtime(path)
    )
    out = []
    for i, t in enumerate(doc["tests"]):
        if "nodeid" not in t or t.get("outcome") not in _JSON_OUTCOME:
            raise ResultsError(
                f"{path}: tests[{i}] needs `nodeid` and `outcome` (one of {', '.join(_JSON_OUTCOME)})"
            )
        base, param = _split_param(t["nodeid"])
        status = _JSON_OUTCOME[t["outcome"]]
        detail = ""
        for stage in ("setup", "call", "teardown"):
            rep = t.get(stage) or {}
            if rep.get("outcome") in ("failed", "skipped") and rep.get("longrepr"):
                detail = str(rep["longrepr"])
                break
        evidence = f"{t['outcome']}" + (f": {detail}" if detail else "")
        out.append(
            CheckResult(
                _layer_of(base), base, status, evidence[:2000], when, _where_from_param(param, ""), path.name
            )
        )
    return out


def parse_promtool(path: Path, text: str, repo_root: Path) -> list[CheckResult]:
    """`promtool test rules FILE...` output: each test file's verdict applies to the alerts it tests."""
    when = _mtime(path)
    blocks = re.split(r"^Unit Testing:\s*", text, flags=re.M)[1:]
    if not blocks:
        raise ResultsError(f"{path}: no 'Unit Testing:' line: expected `promtool test rules` output")
    out = []
    for block in blocks:
        test_file, _, body = block.partition("\n")
        test_file = test_file.strip()
        ok = re.search(r"^\s*SUCCESS\s*$", body, flags=re.M) is not None
        failed = re.search(r"^\s*FAILED", body, flags=re.M) is not None
        test_path = Path(test_file) if Path(test_file).is_absolute() else repo_root / test_file
        try:
            tests = yaml.safe_load(test_path.read_text(encoding="utf-8")) or {}
        except OSError as err:
            raise ResultsError(
                f"{path}: promtool tested {test_file!r} but it cannot be read ({err}); "
                "pass --repo with the directory promtool ran in"
            ) from None
        alerts = sorted(
            {
                case["alertname"]
                for t in tests.get("tests") or []
                for case in t.get("alert_rule_test") or []
                if "alertname" in case
            }
        )
        status = "fail" if failed or not ok else "pass"
        detail = body.strip()[:2000] or "no verdict"
        for alert in alerts:
            out.append(
                CheckResult(
                    "alert", alert, status, f"promtool {test_file}: {detail}", when, "promtool", path.name
                )
            )
    return out


def parse_drill(path: Path, doc: dict) -> list[CheckResult]:
    try:
        drill = layout.DrillResult.parse(doc, str(path))
    except layout.BadDocument as err:
        raise ResultsError(str(err)) from None
    when = drill.finished or drill.started or _mtime(path)
    measured = f"rto={drill.rto_seconds}s rpo={drill.rpo_seconds}s"
    checks = drill.checks or [layout.DrillCheck(name=DEFAULT_DRILL_CHECK, ok=drill.ok, detail=drill.error)]
    return [
        CheckResult("drill", c.name, "pass" if c.ok else "fail", measured + (f"; {c.detail}" if c.detail else ""),
                    when, drill.site, path.name)
        for c in checks
    ]


_AUDIT_RESULT = {"pass": "pass", "fail": "fail", "waived": "waived"}


def parse_audit_json(path: Path, doc: dict) -> list[CheckResult]:
    """tests/audit's audit.json: one result per check and node; `n/a` (role-specific checks on other
    roles) proves nothing for that node and is left out."""
    out = []
    for i, r in enumerate(doc["results"]):
        missing = [k for k in ("nodeid", "node", "result") if k not in r]
        if missing or r.get("result") not in (*_AUDIT_RESULT, "n/a"):
            raise ResultsError(f"{path}: results[{i}] needs nodeid, node and result (pass|fail|waived|n/a); "
                               f"missing {missing or 'nothing'}, result={r.get('result')!r}")
        if r["result"] == "n/a":
            continue
        lines = [*(r.get("evidence") or []), r.get("message") or ""]
        if r.get("waiver"):
            w = r["waiver"]
            state = "EXPIRED waiver" if w.get("expired") else "waived"
            lines.insert(0, f"{state} by {w['owner']} until {w['expires']}: {w['reason']}")
        base, _ = _split_param(r["nodeid"])
        out.append(CheckResult(_layer_of(base), base, _AUDIT_RESULT[r["result"]],
                               "\n".join(filter(None, lines))[:2000], doc.get("generated") or _mtime(path),
                               r["node"], path.name))
    return out


def parse_pulumi_events(path: Path, text: str) -> list[CheckResult]:
    """Engine event log: a policy passes when every resource's summary lists it as passed."""
    failed: dict[str, list[str]] = {}
    passed: set[str] = set()
    stacks: set[str] = set()
    when = _mtime(path)
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as err:
            raise ResultsError(f"{path}:{n}: not a JSON engine event: {err}") from None
        if "timestamp" in event:
            when = datetime.fromtimestamp(event["timestamp"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        violation = event.get("policyEvent")
        if violation:
            failed.setdefault(violation["policyName"], []).append(
                f"{violation.get('resourceUrn', 'stack')}: {violation.get('message', '').strip()}")
        summary = event.get("policyAnalyzeSummaryEvent") or event.get("policyAnalyzeStackSummaryEvent")
        if summary:
            passed.update(summary.get("passed") or [])
            for name in summary.get("failed") or []:
                failed.setdefault(name, [])
            # urn:pulumi:<stack>::<project>::...: the stack is "where".
            stacks.update(u.split(":")[2] for u in [summary.get("resourceUrn", "")] if u.startswith("urn:"))
    if not passed and not failed:
        raise ResultsError(f"{path}: no policy summary events: run `pulumi preview --policy-pack policies/pack "
                           "--event-log FILE` (PULUMI_DEBUG_COMMANDS=true)")
    where = ",".join(sorted(stacks))
    out = []
    for name in sorted(passed | set(failed)):
        if name in failed:
            status, evidence = "fail", "; ".join(failed[name]) or "policy reported failed"
        else:
            status, evidence = "pass", "pulumi preview --policy-pack: passed on every resource"
        out.append(CheckResult("pulumi_policy", name, status, evidence[:2000], when, where, path.name))
    return out


def parse_native(path: Path, doc: dict) -> list[CheckResult]:
    out = []
    for i, r in enumerate(doc.get("results") or []):
        missing = [k for k in ("layer", "check", "status") if k not in r]
        if missing:
            raise ResultsError(f"{path}: results[{i}] lacks {', '.join(missing)}")
        if r["status"] not in STATUSES:
            raise ResultsError(f"{path}: results[{i}].status {r['status']!r} must be one of {STATUSES}")
        out.append(
            CheckResult(
                r["layer"],
                r["check"],
                r["status"],
                str(r.get("evidence", "")),
                r.get("when") or _mtime(path),
                r.get("where", ""),
                path.name,
            )
        )
    return out


def _ignored(path: Path) -> str:
    """Why a file in the results directory is not read as results ("" = read it)."""
    if path.suffix in (".html", ".htm"):
        return "a report for people"
    if path.name == "audit-junit.xml" and (path.parent / "audit.json").exists():
        return "same audit run as audit.json"
    return ""


def read_results(results_dir: Path, repo_root: Path) -> tuple[list[CheckResult], list[dict]]:
    """All results found in `results_dir` (or that one file) and a list of the inputs used (name, sha256,
    adapter)."""
    if results_dir.is_file():
        files, results_dir = [results_dir], results_dir.parent
    elif results_dir.is_dir():
        files = sorted(p for p in results_dir.rglob("*") if p.is_file())
    else:
        raise ResultsError(f"--results {results_dir}: not a directory or a result file")
    results: list[CheckResult] = []
    inputs = []
    for path in files:
        raw = path.read_bytes()
        ignored = _ignored(path)
        if ignored:
            inputs.append({"file": path.relative_to(results_dir).as_posix(),
                           "sha256": hashlib.sha256(raw).hexdigest(), "adapter": f"ignored: {ignored}",
                           "results": 0})
            continue
        if path.suffix == ".jsonl":
            adapter, got = "pulumi-events", parse_pulumi_events(path, raw.decode("utf-8", "replace"))
        elif path.suffix == ".xml":
            adapter, got = "junit", parse_junit(path)
        elif path.suffix == ".json":
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ResultsError(f"{path}: not valid JSON: {err}") from None
            if not isinstance(doc, dict):
                raise ResultsError(f"{path}: expected a JSON object")
            if doc.get("format") == NATIVE_FORMAT:
                adapter, got = "native", parse_native(path, doc)
            elif isinstance(doc.get("results"), list) and "expired_waivers" in doc:
                adapter, got = "audit-json", parse_audit_json(path, doc)
            elif isinstance(doc.get("tests"), list):
                adapter, got = "pytest-json", parse_pytest_json(path, doc)
            elif "rto_seconds" in doc or "checks" in doc and "site" in doc:
                adapter, got = "drill", parse_drill(path, doc)
            else:
                raise ResultsError(
                    f"{path}: unknown JSON results: use format {NATIVE_FORMAT!r}, a pytest-json-report, "
                    "the audit's audit.json, or a drill result (site, ok, rto_seconds, rpo_seconds)"
                )
        elif path.suffix in (".txt", ".log", ".out"):
            adapter, got = "promtool", parse_promtool(path, raw.decode("utf-8", "replace"), repo_root)
        else:
            raise ResultsError(f"{path}: unknown result file type; use .xml, .json, .jsonl or promtool .txt")
        results.extend(got)
        inputs.append(
            {
                "file": path.relative_to(results_dir).as_posix(),
                "sha256": hashlib.sha256(raw).hexdigest(),
                "adapter": adapter,
                "results": len(got),
            }
        )
    if not results:
        raise ResultsError(f"--results {files[0] if len(files) == 1 else results_dir}: no check results found")
    return results, inputs
