"""The compliance team's commands on the deployed lab, as the README gives them: pasted verbatim, the audit of
every node of the stack's inventory passes (waivers only for what a container cannot do) and the signed
evidence bundle has no failing control, each control not run saying why. Its signature verifies, one changed
byte does not, and breaking one setting on one node turns exactly the matching control red (then the setting
is restored and the node's audit is back to the baseline).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import nodes
from policies.evidence.results import read_results
from tests.docs import verbatim_block
from toolchain import REPO

pytestmark = pytest.mark.lab

WAIVERS = REPO / "tests" / "playbooks" / "lab-waivers.yml"
PY = sys.executable
MARK = "/run/sovcloud-evidence-lab.mode"  # tmpfs: saving the old mode changes nothing the audit or AIDE sees


@dataclass(frozen=True)
class Break:
    node: str
    check: str  # the audit check that sees the setting
    what: str
    cmd: str
    restore: str


def _chmod(path: str, change: str) -> tuple[str, str]:
    return (f"sudo sh -c 'stat -c %a {path} > {MARK} && chmod {change} {path}'",
            f"sudo sh -c 'chmod $(cat {MARK}) {path} && rm {MARK}'")


# Settings outside AIDE's paths (/etc, /usr/bin, ...): a changed file there would also, rightly, turn the
# file-integrity control red. The first one whose check passes before and belongs to exactly one control.
BREAKS = [
    Break("astana-w2", "tests/audit/test_host_controls.py::test_SC_HST_05_chrony_running_with_sources",
          "chrony stopped", "sudo systemctl stop chrony", "sudo systemctl start chrony"),
    Break("astana-w2", "tests/audit/test_host_controls.py::test_SC_HST_09_file_permissions",
          "home directory readable by others", *_chmod("/home/sovadmin", "o+rx")),
    Break("astana-cp1", "tests/audit/test_role_controls.py::test_SC_HST_09_etcd_data_dir_private",
          "etcd data directory readable by its group", *_chmod("/var/lib/etcd", "g+rx")),
]


def _env() -> dict[str, str]:
    # ansible-playbook/ansible's Python live in the venv: the audit's ansible:// backend needs them on PATH.
    return {**os.environ, "PATH": f"{Path(PY).parent}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1"}


def _run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=REPO, **kw)


def audit(inv: Path, hosts: str, report: Path, expect: int) -> Path:
    """tests/audit/README.md's one command, as compliance teams run it; `expect` is its exit code: 0 when every
    check passes or is waived, 1 when the audit has findings (anything else is a broken audit)."""
    r = _run([PY, "-m", "pytest", "tests/audit", "-o", "addopts=", "-p", "no:cacheprovider", "--sudo",
              f"--hosts={hosts}", f"--ansible-inventory={inv}", f"--audit-report={report}",
              f"--audit-waivers={WAIVERS}", "-q"])
    assert r.returncode == expect and (report / "audit.json").exists(), (
        f"audit of {hosts}: exit {r.returncode}, expected {expect}\n{r.stdout[-3000:]}{r.stderr[-2000:]}")
    return report


@dataclass(frozen=True)
class Step:
    command: str
    rc: int
    output: str  # its stdout and stderr, and the file it writes with `> FILE`


def run_block(block: str, work: Path) -> list[Step]:
    """Each command of the block, in one shell (its exports carry on), each one's exit code and output kept apart:
    every step runs even after one fails, so each is judged on its own."""
    lines = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    script = "".join(f"{{ {ln}\n}} > {work}/out{i} 2>&1; echo $? > {work}/rc{i}\n" for i, ln in enumerate(lines))
    subprocess.run(["bash", "-o", "pipefail", "-c", script], cwd=REPO, timeout=1500)
    steps = []
    for i, ln in enumerate(lines):
        rc = int((work / f"rc{i}").read_text())
        out = (work / f"out{i}").read_text(errors="replace")
        if (m := re.search(r"(?<![0-9&])>\s*(\S+)", ln.split(" #")[0])) and (REPO / m.group(1)).is_file():
            out = f"--- {m.group(1)} ---\n" + (REPO / m.group(1)).read_text(errors="replace") + f"\n---\n{out}"
        steps.append(Step(ln, rc, out))
    return steps


def step(steps: list[Step], *words: str) -> Step:
    found = [s for s in steps if all(w in s.command for w in words)]
    assert len(found) == 1, f"the README's compliance block has {len(found)} commands with {words}"
    return found[0]


OUTPUTS = ("reports", "evidence", "inventory.json")  # what the README's commands write in the checkout


@pytest.fixture
def readme_run(tmp_path):
    """Run the README's block in the checkout; whatever was there under those names is put back after."""
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in OUTPUTS:
        if (REPO / name).exists():
            shutil.move(REPO / name, aside / name)
    t = time.monotonic()
    block = verbatim_block(REPO / "README.md", "**Compliance teams**")
    logs = tmp_path / "steps"
    logs.mkdir()
    steps = run_block(block, logs)
    took = time.monotonic() - t
    try:
        shutil.copytree(REPO / "reports", tmp_path / "reports") if (REPO / "reports").exists() else None
        shutil.copytree(REPO / "evidence", tmp_path / "evidence") if (REPO / "evidence").exists() else None
        if (REPO / "inventory.json").exists():
            shutil.copy(REPO / "inventory.json", tmp_path / "inventory.json")
        yield steps, tmp_path, took
    finally:
        for name in OUTPUTS:
            target = REPO / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
            if (aside / name).exists():
                shutil.move(aside / name, target)


def build_and_verify(results: Path, out: Path, pki: Path) -> dict:
    b = _run([PY, "-m", "policies.evidence", "build", "--stack", "lab", "--results", str(results), "--out",
              str(out), "--lang", "kk", "--pki-dir", str(pki)])
    assert b.returncode == 0, b.stderr
    v = _run([PY, "-m", "policies.evidence", "verify", str(out), "--pki-dir", str(pki)])
    assert v.returncode == 0 and v.stdout.startswith("OK:"), v.stderr
    return json.loads((out / "evidence.json").read_text(encoding="utf-8"))


def red(ev: dict) -> set[str]:
    return {c["id"] for c in ev["controls"] if c["status"] == "fail"}


def node_checks(ev: dict, node: str) -> dict[str, str]:
    """check -> status on `node`, from the bundle."""
    return {k["check"]: r["status"] for c in ev["controls"] for k in c["checks"] for r in k["results"]
            if r["where"] == node}


def owners(ev: dict, check: str) -> set[str]:
    return {c["id"] for c in ev["controls"] if any(k["check"] == check for k in c["checks"])}


def test_readme_audit_and_evidence_pass_verbatim_and_one_broken_setting_turns_its_control_red(lab_deployment,
                                                                                               readme_run):
    steps, work, took = readme_run
    # Each of the compliance commands on its own: the deployed nodes pass the audit (only lab-waivers.yml's
    # waivers), the chart tests, the alert rules' tests and the stations' drills pass, the bundle builds.
    for words in (("tests/audit", "--audit-report"), ("--junitxml=reports/charts.xml",), ("promtool", "test rules"),
                  ("python -m dr", "drill-results"), ("policies.evidence build",), ("policies.evidence verify",)):
        s = step(steps, *words)
        assert s.rc == 0, f"`{s.command}` exited {s.rc}:\n{s.output[-5000:]}"
    failed = [s for s in steps if s.rc != 0]
    assert not failed, "\n".join(f"`{s.command}` exited {s.rc}:\n{s.output[-2000:]}" for s in failed)
    build = step(steps, "policies.evidence build")
    print(f"the README's compliance commands took {took:.0f} s")
    cfg = lab_deployment["config"]
    deployed = {n.name for s in cfg.sites for n in s.nodes}
    results = json.loads((work / "reports" / "audit.json").read_text())["results"]
    assert {x["node"] for x in results} == deployed, "the audit did not reach every deployed node"
    assert not [x for x in results if x["result"] == "fail"]
    waived = {c for x in results if x["result"] == "waived" for c in x["controls"]}
    assert waived <= {"SC-HST-03", "SC-LOG-01"}, waived  # the kernel's, which a container shares with its host
    before = json.loads((work / "evidence" / "evidence.json").read_text(encoding="utf-8"))
    assert before["summary"]["fail"] == 0 and red(before) == set()
    assert before["summary"]["pass"] >= 15, before["summary"]
    for c in before["controls"]:
        assert (c["status"] == "not-run") == bool(c["not_run_because"]), c["id"]
        assert f"{c['id']} not run: " in build.output or c["status"] != "not-run"
    assert {i["adapter"] for i in before["inputs"]} >= {"audit-json", "pulumi-events", "promtool", "junit", "drill"}
    # The alert rules' tests and the stations' scheduled restore drills (one result per site) ran: their
    # layers have results, every one passing.
    layer_results = {}
    for c in before["controls"]:
        for k in c["checks"]:
            layer_results.setdefault(k["layer"], []).extend(r["status"] for r in k["results"])
    assert layer_results["alert"] and set(layer_results["alert"]) == {"pass"}, layer_results["alert"]
    drills = [r for c in before["controls"] for k in c["checks"] if k["layer"] == "drill" for r in k["results"]]
    assert {r["where"] for r in drills} == {s.name for s in cfg.sites} and {r["status"] for r in drills} == {"pass"}
    # The README runs whole chart test files: their tests that prove no control are listed apart, nothing else.
    assert {(u["layer"], u["source"]) for u in before["unmatched"]} <= {("chart", "charts.xml")}, before["unmatched"]
    pki = Path(os.path.expanduser("~/.cache/sovcloud/lab/state/evidence-pki"))

    # One changed byte (in a status, so the JSON stays valid) or one in the HTML fails verification.
    for name, old, new in (("evidence.json", b'"status": "pass"', b'"status": "Pass"'),
                           ("report.html", b"status-pass", b"status-Pass")):
        bad = work / f"tampered-{name}"
        shutil.copytree(work / "evidence", bad)
        data = (bad / name).read_bytes()
        assert old in data
        (bad / name).write_bytes(data.replace(old, new, 1))
        v = _run([PY, "-m", "policies.evidence", "verify", str(bad), "--pki-dir", str(pki)])
        assert v.returncode == 1 and "does not match" in v.stderr, (name, v.stdout, v.stderr)

    # --- one setting broken on one node: its check passed and exactly one control would change ----------
    seen = {b: node_checks(before, b.node).get(b.check) for b in BREAKS}
    usable = [b for b in BREAKS if seen[b] == "pass" and len(owners(before, b.check)) == 1]
    assert usable, f"no setting to break: {[(b.node, b.check, status) for b, status in seen.items()]}"
    brk = usable[0]
    (control,) = owners(before, brk.check)
    print(f"breaking on {brk.node}: {brk.what} ({brk.check.split('::')[1]}, control {control})")
    site, _ = cfg.find_node(brk.node)
    ip = site.ip(brk.node)
    inv = work / "inventory.json"
    try:
        rb = nodes.ssh(ip, brk.cmd)
        assert rb.returncode == 0, rb.stderr
        results_after = work / "results-after"
        shutil.copytree(work / "reports", results_after, ignore=shutil.ignore_patterns("audit*"))
        audit(inv, f"ansible://{brk.node}", results_after / "audit", expect=1)
    finally:
        rb = nodes.ssh(ip, brk.restore)
        assert rb.returncode == 0, f"restoring {brk.what} on {brk.node} failed: {rb.stderr}"
    after = build_and_verify(results_after, work / "bundle-after", pki)
    changed = {k for k, v in node_checks(after, brk.node).items() if node_checks(before, brk.node).get(k) != v}
    assert changed == {brk.check} and node_checks(after, brk.node)[brk.check] == "fail", changed
    assert red(after) == {control}
    html = (work / "bundle-after" / "report.html").read_text(encoding="utf-8")
    assert f'<tr id="{control}" class="status-fail">' in html

    # --- restored: the node's audit is back to the baseline -------------------------------------------
    report = audit(inv, f"ansible://{brk.node}", work / "restored", expect=0)
    got, _ = read_results(report, REPO)
    restored = {x.check: x.status for x in got if x.where == brk.node}
    assert restored == node_checks(before, brk.node)
