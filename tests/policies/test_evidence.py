"""Evidence bundle: build from fixture results, verify, tamper detection, per-control status, languages."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.catalogue import CATALOGUE_PATH, load_catalogue
from policies.evidence import bundle, signing
from policies.evidence.__main__ import main
from policies.evidence.results import ResultsError, parse_junit, read_results
from policies.oscal import documents
from tests.conftest import require_tool


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> signing.PkiPaths:
    return signing.ensure_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def catalogue_file(tmp_path_factory) -> Path:
    """The real catalogue with every planned check counted, so fixtures exercise all layers."""
    data = yaml.safe_load(CATALOGUE_PATH.read_text(encoding="utf-8"))
    for c in data["controls"]:
        merged = copy.deepcopy(c.get("checks") or {})
        for layer, names in (c.pop("planned", None) or {}).items():
            merged.setdefault(layer, []).extend(names)
        c["checks"] = merged
    path = tmp_path_factory.mktemp("cat") / "controls.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _junit(cases: list[tuple[str, str]]) -> str:
    """JUnit XML as pytest writes it, for (node id, outcome) pairs."""
    rows = []
    for nodeid, outcome in cases:
        path, *rest = nodeid.split("::")
        classname = ".".join([path.removesuffix(".py").replace("/", "."), *rest[:-1]])
        name = rest[-1] + "[paramiko://site-a-node1]"
        body = {
            "pass": "",
            "fail": '<failure message="assert 1 == 0">trace</failure>',
            "skip": '<skipped message="no host" />',
        }[outcome]
        rows.append(
            f'<testcase classname={quoteattr(classname)} name={quoteattr(name)} time="0.1">{body}</testcase>'
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" '
        'timestamp="2025-01-02T03:04:05.000000" hostname="ci">' + "".join(rows) + "</testsuite></testsuites>"
    )


def _write_results(dest: Path, catalogue_file: Path, fail: set[str] = frozenset()) -> Path:
    """One input file per adapter covering every check in the catalogue; checks in `fail` fail."""
    dest.mkdir(parents=True, exist_ok=True)
    cat = load_catalogue(catalogue_file)
    checks = {key for c in cat.controls for key in c.checks.items()}
    tests = sorted(name for layer, name in checks if layer in ("audit", "chart"))
    half = len(tests) // 2
    (dest / "audit.xml").write_text(_junit([(t, "fail" if t in fail else "pass") for t in tests[:half]]))
    (dest / "charts.json").write_text(
        json.dumps(
            {
                "created": 1735787045.0,
                "tests": [
                    {"nodeid": t, "outcome": "failed" if t in fail else "passed"} for t in tests[half:]
                ],
            }
        )
    )
    drills = sorted(name for layer, name in checks if layer == "drill")
    (dest / "drill-site-a.json").write_text(
        json.dumps(
            {
                "site": "site-a",
                "started": "2025-01-02T03:00:00Z",
                "finished": "2025-01-02T03:04:00Z",
                "ok": True,
                "rto_seconds": 240,
                "rpo_seconds": 600,
                "error": None,
                "checks": [{"name": d, "ok": d not in fail} for d in drills],
            }
        )
    )
    (dest / "policies.results.json").write_text(
        json.dumps(
            {
                "format": "sovcloud-results/1",
                "results": [
                    {
                        "layer": layer,
                        "check": name,
                        "status": "fail" if name in fail else "pass",
                        "evidence": "pulumi preview --policy-pack",
                        "when": "2025-01-02T03:04:05Z",
                        "where": "lab",
                    }
                    for layer, name in sorted(checks)
                    if layer in ("pulumi_policy", "alert")
                ],
            }
        )
    )
    return dest


def _build(
    tmp: Path, catalogue_file: Path, pki: signing.PkiPaths, lang: str = "en", fail=frozenset()
) -> Path:
    results = _write_results(tmp / "results", catalogue_file, set(fail))
    out = tmp / "bundle"
    argv = [
        "build",
        "--stack",
        "lab",
        "--results",
        str(results),
        "--out",
        str(out),
        "--lang",
        lang,
        "--key",
        str(pki.key),
        "--cert",
        str(pki.cert),
        "--catalogue",
        str(catalogue_file),
    ]
    assert main(argv) == 0
    return out


def _verify(out: Path, pki: signing.PkiPaths) -> int:
    return main(["verify", str(out), "--ca-cert", str(pki.ca_cert)])


def test_build_then_verify_passes(tmp_path, catalogue_file, pki, capsys):
    out = _build(tmp_path, catalogue_file, pki)
    ev = json.loads((out / "evidence.json").read_text())
    assert ev["summary"] == {"pass": len(ev["controls"]), "fail": 0, "waived": 0, "not-run": 0}
    assert {i["adapter"] for i in ev["inputs"]} == {"junit", "pytest-json", "drill", "native"}
    hst = next(c for c in ev["controls"] if c["id"] == "SC-HST-01")
    assert hst["where"] == ["site-a-node1"] and hst["when"].startswith("2025-01-02T03:04:05")
    assert _verify(out, pki) == 0
    assert "OK:" in capsys.readouterr().out


def test_tampered_json_fails_verification(tmp_path, catalogue_file, pki, capsys):
    out = _build(tmp_path, catalogue_file, pki)
    ev = json.loads((out / "evidence.json").read_text())
    ev["controls"][0]["status"] = "pass" if ev["controls"][0]["status"] != "pass" else "fail"
    (out / "evidence.json").write_text(json.dumps(ev))
    assert _verify(out, pki) == 1
    assert "signature does not match evidence.json" in capsys.readouterr().err


def test_reformatted_json_still_verifies(tmp_path, catalogue_file, pki):
    # The signature covers the canonical form, not whitespace or key order.
    out = _build(tmp_path, catalogue_file, pki)
    ev = json.loads((out / "evidence.json").read_text())
    (out / "evidence.json").write_text(json.dumps(ev, indent=4, ensure_ascii=True))
    assert _verify(out, pki) == 0


def test_tampered_html_fails_verification(tmp_path, catalogue_file, pki, capsys):
    out = _build(tmp_path, catalogue_file, pki, fail={"restore-drill"})
    html = (out / "report.html").read_text()
    (out / "report.html").write_text(html.replace('class="status-fail"', 'class="status-pass"', 1))
    assert _verify(out, pki) == 1
    err = capsys.readouterr().err
    assert "report.html: does not match the signed evidence.json" in err


def test_signer_from_another_ca_is_rejected(tmp_path, catalogue_file, pki, capsys):
    out = _build(tmp_path, catalogue_file, pki)
    other = signing.ensure_pki(tmp_path / "other-pki")
    assert main(["verify", str(out), "--ca-cert", str(other.ca_cert)]) == 1
    assert "not issued by the CA" in capsys.readouterr().err


def test_key_not_matching_cert_fails_before_writing(tmp_path, catalogue_file, pki, capsys):
    other = signing.ensure_pki(tmp_path / "other-pki")
    results = _write_results(tmp_path / "results", catalogue_file)
    argv = [
        "build",
        "--stack",
        "lab",
        "--results",
        str(results),
        "--out",
        str(tmp_path / "b"),
        "--key",
        str(other.key),
        "--cert",
        str(pki.cert),
        "--catalogue",
        str(catalogue_file),
    ]
    assert main(argv) == 2
    assert "--key: " in (err := capsys.readouterr().err) and "does not belong to the certificate" in err
    assert not (tmp_path / "b").exists()


def test_one_failing_check_turns_exactly_its_controls_red(tmp_path, catalogue_file, pki):
    cat = load_catalogue(catalogue_file)
    owners: dict[str, set[str]] = {}
    for c in cat.controls:
        for _, name in c.checks.items():
            owners.setdefault(name, set()).add(c.id)
    # One audit test (JUnit adapter) and one drill shared by two controls.
    audit = next(n for n, ids in sorted(owners.items()) if n.startswith("tests/audit/") and len(ids) == 1)
    shared = next((n for n, ids in sorted(owners.items()) if len(ids) > 1), None)
    for failing in filter(None, (audit, shared)):
        out = _build(tmp_path / failing.replace("/", "_"), catalogue_file, pki, fail={failing})
        ev = json.loads((out / "evidence.json").read_text())
        red = {c["id"] for c in ev["controls"] if c["status"] == "fail"}
        assert red == owners[failing]
        assert all(c["status"] == "pass" for c in ev["controls"] if c["id"] not in red)
        html = (out / "report.html").read_text()
        assert html.count('class="status-fail"') == len(red)
        for cid in red:
            assert f'<tr id="{cid}" class="status-fail">' in html
        assert _verify(out, pki) == 0


def test_skipped_test_leaves_its_control_not_run(tmp_path, catalogue_file, pki):
    out = tmp_path / "r"
    _write_results(out, catalogue_file)
    xml = (out / "audit.xml").read_text()
    # Skip the first audit test of the results; exactly the controls it proves become not-run.
    name = re.search(r'<testcase [^>]*name="([^"]+)" time="0.1">', xml).group(1)
    owners = {c.id for c in load_catalogue(catalogue_file).controls
              for layer, check in c.checks.items()
              if layer in ("audit", "chart") and check.split("::")[-1] == name.split("[")[0]}
    assert owners
    (out / "audit.xml").write_text(
        xml.replace(f'name="{name}" time="0.1">', f'name="{name}" time="0.1"><skipped message="host down" />')
    )
    bundle.build(out, tmp_path / "b", "lab", "en", pki.key, pki.cert, catalogue_path=catalogue_file)
    ev = json.loads((tmp_path / "b" / "evidence.json").read_text())
    assert {c["id"] for c in ev["controls"] if c["status"] == "not-run"} == owners
    assert ev["summary"] == {"pass": len(ev["controls"]) - len(owners), "fail": 0, "waived": 0,
                             "not-run": len(owners)}
    # Each not-run control says why: the skipped check, with the skip's own reason.
    for c in ev["controls"]:
        if c["id"] in owners:
            assert any(name.split("[")[0] in w and "did not run" in w and "host down" in w
                       for w in c["not_run_because"]), c["not_run_because"]
        else:
            assert c["not_run_because"] == []
    assert "host down" in (tmp_path / "b" / "report.html").read_text()


def test_a_check_without_results_is_named_as_why_its_control_is_not_run(tmp_path, catalogue_file, pki, capsys):
    out = tmp_path / "r"
    _write_results(out, catalogue_file)
    (out / "drill-site-a.json").unlink()  # no restore drill among the inputs
    argv = ["build", "--stack", "lab", "--results", str(out), "--out", str(tmp_path / "b"), "--lang", "en",
            "--key", str(pki.key), "--cert", str(pki.cert), "--catalogue", str(catalogue_file)]
    assert main(argv) == 0
    ev = json.loads((tmp_path / "b" / "evidence.json").read_text())
    not_run = {c["id"]: c["not_run_because"] for c in ev["controls"] if c["status"] == "not-run"}
    assert not_run and all(any("no result among the inputs" in w and "drill" in w for w in why)
                           for why in not_run.values()), not_run
    printed = capsys.readouterr().out
    assert all(f"{cid} not run: " in printed for cid in not_run)


@pytest.mark.parametrize(
    ("lang", "title", "word"),
    [
        ("kk", "Сәйкестік дәлелдемелері", "Уақытты синхрондау"),
        ("ru", "Доказательства соответствия", "Синхронизация времени"),
        ("en", "Compliance evidence", "Time synchronisation"),
    ],
)
def test_every_language_renders(tmp_path, catalogue_file, pki, lang, title, word):
    out = _build(tmp_path, catalogue_file, pki, lang=lang)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert f'<html lang="{lang}">' in html and title in html and word in html
    assert _verify(out, pki) == 0


def test_real_catalogue_builds_and_verifies(tmp_path, pki):
    """The catalogue as it is in the repo: checks without results are `not-run`, never `pass`."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "x.results.json").write_text(
        json.dumps(
            {
                "format": "sovcloud-results/1",
                "results": [
                    {"layer": "audit", "check": "tests/audit/test_nothing.py::test_x", "status": "pass"}
                ],
            }
        )
    )
    ev = bundle.build(results, tmp_path / "b", "lab", "kk", pki.key, pki.cert)
    assert ev["summary"]["pass"] == 0 and ev["unmatched"][0]["check"].endswith("test_x")
    assert _verify(tmp_path / "b", pki) == 0


def test_junit_node_ids_with_classes_and_params(tmp_path):
    p = tmp_path / "r.xml"
    p.write_text(
        '<testsuite timestamp="t" hostname="h"><testcase classname="tests.audit.test_ssh.TestFiles" '
        'name="test_mode[paramiko://root@site-b-node2-/etc/passwd]" time="1"/>'
        '<testcase classname="tests.charts.test_tenant" name="test_quota" time="1"/></testsuite>'
    )
    a, b = parse_junit(p)
    assert (a.layer, a.check, a.where) == (
        "audit",
        "tests/audit/test_ssh.py::TestFiles::test_mode",
        "site-b-node2",
    )
    assert (b.layer, b.check, b.where, b.status) == (
        "chart",
        "tests/charts/test_tenant.py::test_quota",
        "h",
        "pass",
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.json", "{", "not valid JSON"),
        ("a.json", '{"foo": 1}', "unknown JSON results"),
        ("a.xml", "<html/>", "is not <testsuites>"),
        ("a.bin", "x", "unknown result file type"),
        (
            "a.json",
            '{"format": "sovcloud-results/1", "results": [{"layer": "a", "check": "c", "status": "ok"}]}',
            "results[0].status 'ok' must be one of",
        ),
        ("a.json", '{"site": "s", "rto_seconds": 1}', "restore-drill result: ok: Field required"),
    ],
)
def test_bad_result_files_are_named(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ResultsError) as err:
        read_results(tmp_path, tmp_path)
    assert name in str(err.value) and message in str(err.value)


@pytest.mark.tools
def test_promtool_output_adapter_with_real_promtool(tmp_path, pki):
    """Real `promtool test rules` output: the verdict of a test file applies to the alerts it tests."""
    promtool = require_tool("promtool")
    (tmp_path / "rules.yml").write_text(
        "groups:\n- name: t\n  rules:\n  - alert: SovcloudTargetDown\n    expr: up == 0\n    for: 1m\n"
        "    labels: {controls: SC-MON-01}\n"
    )

    def run(expected_job: str) -> str:
        (tmp_path / "t.yml").write_text(
            "rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n- interval: 1m\n"
            "  input_series: [{series: 'up{job=\"x\"}', values: '0x5'}]\n"
            "  alert_rule_test:\n  - eval_time: 3m\n    alertname: SovcloudTargetDown\n"
            f"    exp_alerts: [{{exp_labels: {{job: {expected_job}, controls: SC-MON-01}}}}]\n"
        )
        proc = subprocess.run(
            [promtool, "test", "rules", "t.yml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return proc.stdout + proc.stderr

    for job, status in (("x", "pass"), ("y", "fail")):
        results = tmp_path / f"results-{job}"
        results.mkdir()
        (results / "promtool.txt").write_text(run(job))
        got, inputs = read_results(results, tmp_path)
        assert [(r.layer, r.check, r.status) for r in got] == [("alert", "SovcloudTargetDown", status)]
        assert inputs[0]["adapter"] == "promtool"


def _audit_report(dest: Path) -> Path:
    """A report directory as tests/audit writes it: audit.json, audit-junit.xml and audit.html."""
    dest.mkdir(parents=True, exist_ok=True)
    base = "tests/audit/test_host_controls.py::"
    rows = [  # (test, node, result, waiver)
        ("test_SC_HST_05_chrony_running_with_sources", "n1", "pass", None),
        ("test_SC_HST_05_chrony_running_with_sources", "n2", "pass", None),
        ("test_SC_HST_07_unattended_upgrades", "n1", "pass", None),
        ("test_SC_HST_07_unattended_upgrades", "n2", "waived",
         {"owner": "sec@x", "reason": "container", "expires": "2027-06-30", "expired": False}),
        ("test_SC_HST_07_outdated_services_listed", "n1", "pass", None),  # every check the catalogue names
        ("test_SC_HST_07_outdated_services_listed", "n2", "pass", None),
        ("test_SC_HST_08_modules_blacklisted", "n1", "pass", None),
        ("test_SC_HST_08_modules_blacklisted", "n2", "fail", None),
        ("test_SC_HST_08_no_needless_packages", "n1", "pass", None),
        ("test_SC_HST_08_no_needless_packages", "n2", "n/a", None),
    ]
    results = [{"test": t, "nodeid": f"{base}{t}[ansible://{n}]", "node": n, "result": r,
                "controls": ["SC-HST-0" + t[10]], "evidence": [f"{t} on {n}"], "message": "",
                "waiver": w} for t, n, r, w in rows]
    (dest / "audit.json").write_text(json.dumps({"generated": "2025-01-02T03:04:05+00:00", "hosts": ["x"],
                                                 "summary": {}, "expired_waivers": [], "ok": False,
                                                 "results": results}))
    (dest / "audit-junit.xml").write_text(_junit([(base + "test_SC_HST_05_chrony_running_with_sources", "fail")]))
    (dest / "audit.html").write_text("<html></html>")
    return dest


def test_audit_json_per_node_with_waivers_and_not_applicable(tmp_path, pki):
    reports = _audit_report(tmp_path / "reports")
    got, inputs = read_results(reports, tmp_path)
    assert {i["file"]: i["adapter"] for i in inputs} == {
        "audit.json": "audit-json", "audit-junit.xml": "ignored: same audit run as audit.json",
        "audit.html": "ignored: a report for people"}
    # n/a proves nothing for its node: left out; the junit copy of the same run is not double-counted.
    assert len(got) == 9 and all(r.layer == "audit" and "[" not in r.check for r in got)
    waived = next(r for r in got if r.status == "waived")
    assert waived.where == "n2" and waived.evidence.startswith("waived by sec@x until 2027-06-30: container")
    ev = bundle.build(reports, tmp_path / "b", "lab", "ru", pki.key, pki.cert)
    status = {c["id"]: c["status"] for c in ev["controls"]}
    assert (status["SC-HST-05"], status["SC-HST-07"], status["SC-HST-08"]) == ("pass", "waived", "fail")
    assert ev["summary"]["waived"] == 1 and ev["summary"]["pass"] == 1 and ev["summary"]["fail"] == 1
    html = (tmp_path / "b" / "report.html").read_text(encoding="utf-8")
    assert '<tr id="SC-HST-07" class="status-waived">' in html and "принято как исключение" in html
    assert _verify(tmp_path / "b", pki) == 0


def test_bad_audit_json_entry_is_named(tmp_path):
    (tmp_path / "audit.json").write_text(json.dumps({"expired_waivers": [], "results": [
        {"nodeid": "tests/audit/t.py::test_x", "node": "n1", "result": "maybe"}]}))
    with pytest.raises(ResultsError, match=r"audit.json: results\[0\] needs .*result='maybe'"):
        read_results(tmp_path, tmp_path)


# Captured from a real `pulumi preview --policy-pack policies/pack --event-log` of a program declaring a
# LoadBalancer Service (trimmed to the policy events).
_PACK = '"policyPackName":"sovcloud","policyPackVersion":"0.0.1","policyPackVersionTag":"0.0.1"'
_ALL = ('"data-residency","encryption-at-rest","gateway-only-exposure","ha-rack-spread","pod-resource-limits",'
        '"tls-min-1-2","transport-encrypted"')
PULUMI_EVENTS = "\n".join([
    '{"sequence":0,"timestamp":1795523543,"policyLoadEvent":{}}',
    '{"sequence":11,"timestamp":1795523544,"policyAnalyzeSummaryEvent":{"resourceUrn":"urn:pulumi:p::policyprobe'
    f'::pulumi:pulumi:Stack::policyprobe-p",{_PACK},"passed":[{_ALL}]}}}}',
    '{"sequence":23,"timestamp":1795523546,"policyEvent":{"resourceUrn":"urn:pulumi:p::policyprobe::pulumi-python'
    ':dynamic:Resource::public-lb","message":"[SC-NET-01] No LoadBalancer/NodePort Service or Ingress\\nService '
    'portal is of type LoadBalancer\\n","color":"never","policyName":"gateway-only-exposure",'
    f'{_PACK},"enforcementLevel":"mandatory"}}}}',
    '{"sequence":24,"timestamp":1795523546,"policyAnalyzeSummaryEvent":{"resourceUrn":"urn:pulumi:p::policyprobe'
    f'::pulumi-python:dynamic:Resource::public-lb",{_PACK},"passed":["data-residency","encryption-at-rest",'
    '"ha-rack-spread","pod-resource-limits","tls-min-1-2","transport-encrypted"],'
    '"failed":["gateway-only-exposure"]}}',
    f'{{"sequence":32,"timestamp":1795523546,"policyAnalyzeStackSummaryEvent":{{{_PACK}}}}}',
])


def test_pulumi_event_log_gives_one_result_per_policy(tmp_path):
    (tmp_path / "preview.events.jsonl").write_text(PULUMI_EVENTS + "\n")
    got, inputs = read_results(tmp_path, tmp_path)
    assert inputs[0]["adapter"] == "pulumi-events" and len(got) == 7
    by = {r.check: r for r in got}
    # A policy failed on one resource fails, whatever other resources passed.
    assert by["gateway-only-exposure"].status == "fail" and "public-lb: [SC-NET-01]" in by[
        "gateway-only-exposure"].evidence
    assert {r.status for n, r in by.items() if n != "gateway-only-exposure"} == {"pass"}
    assert {(r.layer, r.where, r.when) for r in got} == {("pulumi_policy", "p", "2026-11-24T12:32:26Z")}


def test_event_log_without_policy_summaries_is_refused(tmp_path):
    (tmp_path / "preview.events.jsonl").write_text('{"sequence":0,"timestamp":1,"preludeEvent":{}}\n')
    with pytest.raises(ResultsError, match="no policy summary events: run `pulumi preview --policy-pack"):
        read_results(tmp_path, tmp_path)


# --- bad input of the evidence CLI: refused before anything is written (exit 2, one line per problem) ----------

def _issue_signer(pki_dir: Path, out: Path, not_before, not_after) -> signing.PkiPaths:
    """A signer key and certificate in `out`, issued by the bootstrap CA of `pki_dir` for [not_before, not_after]."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key = serialization.load_pem_private_key((pki_dir / "evidence-ca.key").read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate((pki_dir / "evidence-ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(signing._name("sovcloud evidence signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after).sign(ca_key, hashes.SHA256()))
    out.mkdir(parents=True, exist_ok=True)
    signing._write_key(out / "evidence-signer.key", key)
    (out / "evidence-signer.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return signing.PkiPaths(out / "evidence-signer.key", out / "evidence-signer.pem", pki_dir / "evidence-ca.pem")


def _window(days_from_now: int, length: int):
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) + timedelta(days=days_from_now)
    return start, start + timedelta(days=length)


@pytest.fixture(scope="module")
def signers(pki, tmp_path_factory) -> dict[str, signing.PkiPaths]:
    """Signers of the test CA: expired yesterday, valid only from tomorrow."""
    pki_dir = pki.ca_cert.parent
    d = tmp_path_factory.mktemp("signers")
    return {"expired": _issue_signer(pki_dir, d / "expired", *_window(-30, 29)),
            "future": _issue_signer(pki_dir, d / "future", *_window(1, 30))}


@pytest.fixture(scope="module")
def good_bundle(pki, catalogue_file, tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("good-bundle"), catalogue_file, pki)


def _build_argv(results: Path, out: Path, *signer: str) -> list[str]:
    return ["build", "--stack", "lab", "--results", str(results), "--out", str(out), *signer]


# Each mistake returns the build or verify arguments with one bad input, and the field the error must name.
def _mistake(kind: str, d: Path, pki: signing.PkiPaths, signers: dict, bundle_dir: Path, results: Path):
    out = d / "out"
    keycert = ["--key", str(pki.key), "--cert", str(pki.cert)]
    if kind == "pki-dir-missing":
        return _build_argv(results, out, "--pki-dir", str(d / "no-pki")), "--pki-dir"
    if kind == "pki-dir-missing-verify":
        return ["verify", str(bundle_dir), "--pki-dir", str(d / "no-pki")], "--pki-dir"
    if kind == "pki-dir-without-signer":
        (d / "empty-pki").mkdir()
        return _build_argv(results, out, "--pki-dir", str(d / "empty-pki")), "--pki-dir"
    if kind == "key-missing":
        return _build_argv(results, out, "--key", str(d / "no.key"), "--cert", str(pki.cert)), "--key"
    if kind == "key-not-pem":
        (d / "bad.key").write_text("not a key")
        return _build_argv(results, out, "--key", str(d / "bad.key"), "--cert", str(pki.cert)), "--key"
    if kind == "cert-missing":
        return _build_argv(results, out, "--key", str(pki.key), "--cert", str(d / "no.pem")), "--cert"
    if kind in ("signer-expired", "signer-not-yet-valid"):
        s = signers["expired" if kind == "signer-expired" else "future"]
        return _build_argv(results, out, "--key", str(s.key), "--cert", str(s.cert)), "--cert"
    if kind == "results-missing":
        return _build_argv(d / "no-results", out, *keycert), "--results"
    if kind == "ca-missing":
        return ["verify", str(bundle_dir), "--ca-cert", str(d / "no-ca.pem")], "--ca-cert"
    copy = d / "bundle"
    import shutil

    shutil.copytree(bundle_dir, copy)
    if kind == "bundle-signature-missing":
        (copy / bundle.SIGNATURE).unlink()
        return ["verify", str(copy), "--ca-cert", str(pki.ca_cert)], str(copy / bundle.SIGNATURE)
    if kind == "bundle-signer-missing":
        (copy / bundle.SIGNER).unlink()
        return ["verify", str(copy), "--ca-cert", str(pki.ca_cert)], str(copy / bundle.SIGNER)
    assert kind == "bundle-signer-expired"
    (copy / bundle.SIGNER).write_bytes(signers["expired"].cert.read_bytes())
    return ["verify", str(copy), "--ca-cert", str(pki.ca_cert)], str(copy / bundle.SIGNER)


EVIDENCE_MISTAKES = ["pki-dir-missing", "pki-dir-missing-verify", "pki-dir-without-signer", "key-missing",
                     "key-not-pem", "cert-missing", "signer-expired", "signer-not-yet-valid", "results-missing",
                     "ca-missing", "bundle-signature-missing", "bundle-signer-missing", "bundle-signer-expired"]


def test_good_inputs_build_and_verify(good_bundle, pki, capsys):
    # The control of the mistakes below: the same inputs, unchanged, verify.
    assert _verify(good_bundle, pki) == 0
    assert main(["verify", str(good_bundle), "--pki-dir", str(pki.ca_cert.parent)]) == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mistake=st.sampled_from(EVIDENCE_MISTAKES))
def test_one_bad_input_is_named_and_nothing_is_written(mistake, pki, signers, good_bundle, catalogue_file, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        results = _write_results(d / "results", catalogue_file)
        argv, field = _mistake(mistake, d, pki, signers, good_bundle, results)
        before = sorted(p.relative_to(d) for p in d.rglob("*"))
        capsys.readouterr()
        assert main([*argv, "--catalogue", str(catalogue_file)] if argv[0] == "build" else argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[0] == "error: invalid python -m policies.evidence arguments:", err
        assert all(line.startswith("  ") and ": " in line for line in err[1:]), err
        assert any(line.startswith(f"  {field}: ") for line in err[1:]), (field, err)
        assert sorted(p.relative_to(d) for p in d.rglob("*")) == before  # no CA, no signer, no bundle
        assert not (d / "no-pki").exists()


def test_a_pki_dir_that_does_not_exist_is_refused_not_created(tmp_path, catalogue_file):
    results = _write_results(tmp_path / "results", catalogue_file)
    nowhere = tmp_path / "typo" / "evidence-pki"
    for argv in (_build_argv(results, tmp_path / "out", "--pki-dir", str(nowhere)),
                 ["verify", str(tmp_path), "--pki-dir", str(nowhere)]):
        p = subprocess.run([sys.executable, "-m", "policies.evidence", *argv], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert f"  --pki-dir: {nowhere} does not exist: point it at the directory of the stack's evidence signer" in (
            p.stderr)
        assert not nowhere.exists() and not (tmp_path / "typo").exists() and not (tmp_path / "out").exists()


def test_an_expired_signer_is_refused_at_signing_and_at_verification(signers, pki, good_bundle, tmp_path,
                                                                     catalogue_file, capsys):
    results = _write_results(tmp_path / "results", catalogue_file)
    s = signers["expired"]
    assert main(_build_argv(results, tmp_path / "b", "--key", str(s.key), "--cert", str(s.cert),
                            "--catalogue", str(catalogue_file))) == 2
    (line,) = capsys.readouterr().err.splitlines()[1:]
    assert line.startswith(f"  --cert: {s.cert}: the signer certificate expired on ")
    assert "issue a new evidence signer" in line and not (tmp_path / "b").exists()
    # At verification, in the library too: the chain check names the expiry.
    cert = signing.load_cert(s.cert, "--cert")
    with pytest.raises(signing.SignatureError, match=r"^signer certificate expired on \d{4}-\d\d-\d\d "):
        signing.verify_chain(cert, signing.load_cert(pki.ca_cert, "--ca-cert"))
    signing.verify_chain(signing.load_cert(pki.cert, "--cert"), signing.load_cert(pki.ca_cert, "--ca-cert"))


def test_a_partial_pki_dir_is_never_overwritten(tmp_path, pki):
    (tmp_path / "evidence-signer.key").write_bytes(pki.key.read_bytes())
    with pytest.raises(signing.SignatureError, match="evidence-signer.pem, evidence-ca.pem missing"):
        signing.ensure_pki(tmp_path)
    assert (tmp_path / "evidence-signer.key").read_bytes() == pki.key.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence-signer.key"]


def test_bundle_carries_the_runs_oscal_documents_under_its_signature(tmp_path, catalogue_file, pki):
    failing = "restore-drill"
    out = _build(tmp_path, catalogue_file, pki, fail={failing})
    ev = json.loads((out / "evidence.json").read_text())
    assert sorted(ev["oscal"]) == sorted(f"oscal/{name}" for name in documents.MODELS)
    for name, digest in ev["oscal"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    docs = documents.validate(out / "oscal")  # compliance-trestle's models and validators
    # The assessment results say what evidence.json says: satisfied exactly where a control passed.
    (result,) = docs["assessment-results.json"].results
    state = {f.target.target_id.removesuffix("_smt").upper(): f.target.status.state.value for f in result.findings}
    assert state == {c["id"]: "satisfied" if c["status"] == "pass" else "not-satisfied" for c in ev["controls"]}
    assert {c["id"] for c in ev["controls"] if c["status"] == "fail"} and "satisfied" in state.values()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert all(f"<code>{name}</code> {digest}" in html for name, digest in ev["oscal"].items())
    assert _verify(out, pki) == 0


def test_changed_missing_or_unsigned_oscal_document_fails_verification(tmp_path, catalogue_file, pki, capsys):
    out = _build(tmp_path, catalogue_file, pki, fail={"restore-drill"})
    name = "oscal/assessment-results.json"
    text = (out / name).read_text(encoding="utf-8")
    assert '"not-satisfied"' in text
    for case, change, message in (
        ("changed", lambda b: (b / name).write_text(text.replace('"not-satisfied"', '"satisfied"', 1)),
         f"{name}: does not match the signed evidence.json"),
        ("missing", lambda b: (b / name).unlink(), f"{name}: listed in the signed evidence.json but unreadable"),
        ("unsigned", lambda b: (b / "oscal" / "poam.json").write_text("{}"),
         "oscal/poam.json not in the signed evidence.json"),
    ):
        bad = tmp_path / case
        shutil.copytree(out, bad)
        assert _verify(bad, pki) == 0, case  # the copy verifies until it is changed
        capsys.readouterr()
        change(bad)
        assert _verify(bad, pki) == 1, case
        assert message in capsys.readouterr().err, case
