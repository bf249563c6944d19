"""The audit plugin (tests/audit/conftest.py) on checks written here, against this machine (`local://`), without a
lab: a waiver of one control does not waive a check that also proves another, and a run spread over pytest-xdist
workers reports exactly what a run in one process reports."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.audit.conftest import Waiver, cover
from toolchain import REPO

# Checks that read nothing of the machine: what they prove is fixed here, so the report is known in advance.
CHECKS = '''
import pytest

@pytest.mark.control("SC-K8S-04", "SC-LOG-01")
def test_policy_and_log(host, evidence):
    evidence.append("apiserver audit policy: missing")
    assert False, "no --audit-policy-file"

@pytest.mark.control("SC-HST-09")
def test_banner(host):
    pass

@pytest.mark.control("SC-HST-01")
@pytest.mark.parametrize("i", range(6))
def test_many(host, i):
    assert i != 3, "the fourth one fails"
'''
WAIVER = "  - {{control: {c}, node: 'local*', owner: sec@example, reason: known, expires: 2030-01-01}}\n"


def _audit(tmp_path: Path, name: str, waived: list[str], *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    work = tmp_path / name
    work.mkdir()
    (work / "test_checks.py").write_text(CHECKS)
    (work / "waivers.yml").write_text("waivers:\n" + "".join(WAIVER.format(c=c) for c in waived))
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.audit.conftest", "-p", "no:cacheprovider",
                        "-p", "no:randomly", "-q", "--hosts=local://", "--audit-report=report",
                        "--audit-waivers=waivers.yml", "--audit-today=2029-01-01", *args],
                       cwd=work, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    report = work / "report" / "audit.json"
    assert report.exists(), r.stdout[-2000:] + r.stderr[-2000:]
    return r, json.loads(report.read_text())


def _by_test(doc: dict) -> dict[str, str]:
    # testinfra parametrizes every check by host: test_many[local-3] -> test_many[3]
    return {x["nodeid"].split("::")[1].replace("[local]", "").replace("[local-", "["): x["result"]
            for x in doc["results"]}


def test_a_waiver_of_one_control_does_not_waive_a_check_that_proves_another(tmp_path):
    r, doc = _audit(tmp_path, "one", ["SC-LOG-01", "SC-HST-01"])
    got = _by_test(doc)
    assert got["test_policy_and_log"] == "fail", got  # SC-K8S-04 has no waiver: the check stays red
    (leak,) = [x for x in doc["results"] if x["test"] == "test_policy_and_log"]
    assert leak["message"].startswith("not waived: no valid waiver of SC-K8S-04 on local (waived only: SC-LOG-01)")
    assert leak["waiver"] is None and leak["waivers"] == []
    assert got["test_many[3]"] == "waived"  # the waiver itself works where it covers every control
    assert r.returncode == 1 and doc["ok"] is False


def test_a_check_is_waived_when_every_control_it_proves_is_waived(tmp_path):
    r, doc = _audit(tmp_path, "both", ["SC-LOG-01", "SC-K8S-04", "SC-HST-01"])
    (both,) = [x for x in doc["results"] if x["test"] == "test_policy_and_log"]
    assert both["result"] == "waived"
    assert {w["control"] for w in both["waivers"]} == {"SC-K8S-04", "SC-LOG-01"}
    assert r.returncode == 0 and doc["ok"] is True, r.stdout[-2000:]


def test_cover_names_what_no_valid_waiver_covers():
    today = dt.date(2029, 1, 1)
    log = Waiver("SC-LOG-01", "cp*", "sec", "kernel's", dt.date(2030, 1, 1))
    old = Waiver("SC-K8S-04", "cp*", "sec", "gone", dt.date(2028, 1, 1))
    assert cover([log], ["SC-K8S-04", "SC-LOG-01"], "cp1", today) == ([log], ["SC-K8S-04"])
    assert cover([log, old], ["SC-K8S-04", "SC-LOG-01"], "cp1", today) == ([log], ["SC-K8S-04"])  # expired
    assert cover([log], ["SC-LOG-01"], "w1", today) == ([], ["SC-LOG-01"])  # another node
    assert cover([log], ["SC-LOG-01"], "cp1", today) == ([log], [])


def test_xdist_workers_report_what_one_process_reports(tmp_path):
    _, alone = _audit(tmp_path, "alone", ["SC-LOG-01"])
    r, spread = _audit(tmp_path, "spread", ["SC-LOG-01"], "-n", "2")
    assert "bringing up nodes" in r.stdout, r.stdout[-2000:]  # xdist's workers ran the checks
    assert len(alone["results"]) == 8
    assert _by_test(spread) == _by_test(alone)
    assert (spread["summary"], spread["ok"]) == (alone["summary"], alone["ok"]) == ({"fail": 2, "pass": 6}, False)
    (failed,) = [x for x in spread["results"] if x["test"] == "test_policy_and_log"]
    assert failed["evidence"] == ["apiserver audit policy: missing"]  # a worker's evidence reaches the report


def test_flags_reads_a_command_line_as_the_component_does():
    from tests.audit.facts import flags

    args = ["/usr/local/bin/kube-apiserver", "--anonymous-auth=false", "--profiling", "false", "--v=2",
            "--enable-admission-plugins=NodeRestriction,PodSecurity", "--anonymous-auth=true"]
    # `--profiling false` is profiling on (a bare boolean flag) and a stray argument: never read as "false".
    assert flags(args) == {"--anonymous-auth": "true", "--profiling": "", "--v": "2",
                           "--enable-admission-plugins": "NodeRestriction,PodSecurity"}
