"""Issue 9 on the lab: the evidence bundle for the lab stack is produced from real sources (the compliance
audit of one whole site, the policy pack over the lab stack, chart checks, alert rule tests, a restore drill
against the lab's S3), its signature verifies, one changed byte does not, and breaking one setting on one
node turns exactly the matching control red (then the setting is restored and the control is back).

Assertions compare before/after, so they hold whether or not the lab nodes are hardened yet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import inventory, nodes
from policies.catalogue import load_catalogue
from policies.evidence.results import read_results
from toolchain import REPO

pytestmark = pytest.mark.lab

SITE = "dc-astana"
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
# file-integrity control red. The first one whose check passes before and whose change touches exactly one
# control on its node is used: chrony on a hardened worker, the etcd data dir on an unhardened lab.
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


def audit(inv: Path, hosts: str, report: Path) -> Path:
    """tests/audit/README.md's one command, as compliance teams run it."""
    r = _run([PY, "-m", "pytest", "tests/audit", "-o", "addopts=", "-p", "no:cacheprovider", "--sudo",
              f"--hosts={hosts}", f"--ansible-inventory={inv}", f"--audit-report={report}",
              f"--audit-waivers={WAIVERS}", "-q"])
    # 0 = all passed or waived, 1 = findings; anything else (usage error, crash) is a broken audit.
    assert r.returncode in (0, 1) and (report / "audit.json").exists(), r.stdout[-3000:] + r.stderr[-2000:]
    return report


def other_sources(results: Path, state: Path, tmp: Path) -> dict[str, float]:
    """Every non-audit evidence source the lab has, each run for real; returns seconds per source."""
    took = {}
    t = time.monotonic()
    backend = tmp / "pulumi-state"
    backend.mkdir()
    env = {**_env(), "PULUMI_BACKEND_URL": f"file://{backend}", "PULUMI_CONFIG_PASSPHRASE": "sovcloud-lab",
           "PULUMI_DEBUG_COMMANDS": "true"}  # --event-log is a hidden flag
    pulumi = shutil.which("pulumi", path=env["PATH"])
    subprocess.run([pulumi, "stack", "init", "lab", "--non-interactive"], env=env, cwd=REPO, check=True,
                   capture_output=True, timeout=120)
    pre = subprocess.run([pulumi, "preview", "--stack", "lab", "--non-interactive", "--policy-pack",
                          "policies/pack", "--event-log", str(results / "lab-preview.events.jsonl")],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert pre.returncode == 0, f"policy-pack preview of the lab stack failed:\n{pre.stdout[-3000:]}"
    took["pulumi preview --policy-pack"] = time.monotonic() - t

    t = time.monotonic()
    tests = sorted(str(p) for p in (REPO / "monitoring" / "prometheus" / "tests").glob("*.yml"))
    prom = _run([shutil.which("promtool", path=_env()["PATH"]), "test", "rules",
                 *(str(Path(p).relative_to(REPO)) for p in tests)])
    (results / "promtool.txt").write_text(prom.stdout + prom.stderr)
    took["promtool test rules"] = time.monotonic() - t

    t = time.monotonic()
    charts = sorted({n for c in load_catalogue().controls for layer, n in c.checks.items() if layer == "chart"})
    ch = _run([PY, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider", "-q", "-m", "not lab",
               f"--junitxml={results / 'charts.xml'}", *charts])
    assert ch.returncode in (0, 1) and (results / "charts.xml").exists(), ch.stdout[-3000:]
    took["chart checks"] = time.monotonic() - t

    t = time.monotonic()
    drill = _run([PY, "-m", "dr", "--config", str(state / "dr" / "dr.json"), "drill"])
    doc, _ = json.JSONDecoder().raw_decode(drill.stdout)  # the JSON result, then a one-line summary
    (results / f"drill-{doc['site']}.json").write_text(json.dumps(doc, indent=1))
    print(f"drill against the lab's S3: {drill.stdout.strip().splitlines()[-1]}")
    took["restore drill"] = time.monotonic() - t
    return took


def build_and_verify(results: Path, out: Path, pki: Path) -> dict:
    """README's documented commands: build the bundle for the lab stack, signed by the stack's evidence
    signer (issued by its Pulumi PKI, written by the deployment), then verify it against the stack's root."""
    b = _run([PY, "-m", "policies.evidence", "build", "--stack", "lab", "--results", str(results), "--out",
              str(out), "--lang", "kk", "--pki-dir", str(pki)])
    assert b.returncode == 0, b.stderr
    v = _run([PY, "-m", "policies.evidence", "verify", str(out), "--pki-dir", str(pki)])
    assert v.returncode == 0 and v.stdout.startswith("OK:"), v.stderr
    print(f"evidence bundle: {out}/evidence.json, {out}/report.html ({b.stdout.strip()})")
    return json.loads((out / "evidence.json").read_text(encoding="utf-8"))


def red(ev: dict) -> set[str]:
    return {c["id"] for c in ev["controls"] if c["status"] == "fail"}


def per_node(ev: dict, names: set[str]) -> tuple[dict, dict]:
    """(node, check) -> status and (node, control) -> status (fail > waived > pass) from the bundle."""
    checks, controls = {}, {}
    rank = ["pass", "waived", "fail"]
    for c in ev["controls"]:
        for k in c["checks"]:
            for r in k["results"]:
                if r["where"] in names and r["status"] in rank:
                    checks[(r["where"], k["check"])] = r["status"]
                    key = (r["where"], c["id"])
                    controls[key] = max(controls.get(key, "pass"), r["status"], key=rank.index)
    return checks, controls


def owners(ev: dict, check: str) -> set[str]:
    return {c["id"] for c in ev["controls"] if any(k["check"] == check for k in c["checks"])}


def test_lab_bundle_verifies_and_one_broken_setting_turns_exactly_its_control_red(lab_deployment,
                                                                                   tmp_path_factory):
    cfg = lab_deployment["config"]
    state = inventory.state_dir(cfg)
    inv = state / "inventory.yml"
    assert inv.exists() and (state / "dr" / "dr.json").exists(), f"{state}: no inventory/DR config: `make lab`"
    pki = state / "evidence-pki"
    assert (pki / "evidence-signer.key").exists(), f"{pki}: no evidence signer from the lab stack: `make lab`"
    site = cfg.site(SITE)
    # One node of each role of the site, plus the nodes a setting may be broken on (astana-w2: then
    # astana-w1 is a same-role node that must not change). The whole site takes minutes on a loaded host.
    names = {next(n.name for n in site.nodes if n.role == role) for role in {n.role for n in site.nodes}}
    names |= {b.node for b in BREAKS}
    assert {n.role for n in site.nodes if n.name in names} == {"control-plane", "worker", "gateway"}
    hosts = ",".join(f"ansible://{n}" for n in sorted(names))  # names from the inventory the lab writes
    work = tmp_path_factory.mktemp("evidence-lab")
    timings = {}

    # --- baseline: every source, one bundle, signature verified -----------------------------------------
    sources = work / "sources"
    sources.mkdir()
    timings.update(other_sources(sources, state, work))

    def bundle(tag: str) -> dict:
        t = time.monotonic()
        results = work / f"results-{tag}"
        shutil.copytree(sources, results)
        audit(inv, hosts, results / "audit")
        timings[f"audit of {len(names)} nodes ({tag})"] = time.monotonic() - t
        t = time.monotonic()
        ev = build_and_verify(results, work / f"bundle-{tag}", pki)
        timings[f"bundle build+verify ({tag})"] = time.monotonic() - t
        return ev

    before = bundle("before")
    assert {i["adapter"] for i in before["inputs"]} >= {"audit-json", "pulumi-events", "promtool", "junit",
                                                        "drill"}
    assert not before["unmatched"], "a result no catalogue check claims (tests/policies/test_catalogue.py)"
    audited = {r["where"] for c in before["controls"] for k in c["checks"] for r in k["results"]} & names
    assert audited == names, f"the audit reported no results for {names - audited}"

    # One changed byte (in a status, so the JSON stays valid) or one in the HTML fails verification.
    for name, old, new in (("evidence.json", b'"status": "pass"', b'"status": "Pass"'),
                           ("report.html", b"status-pass", b"status-Pass")):
        bad = work / f"tampered-{name}"
        shutil.copytree(work / "bundle-before", bad)
        data = (bad / name).read_bytes()
        assert old in data
        (bad / name).write_bytes(data.replace(old, new, 1))
        v = _run([PY, "-m", "policies.evidence", "verify", str(bad), "--pki-dir", str(pki)])
        assert v.returncode == 1 and "does not match" in v.stderr, (name, v.stdout, v.stderr)

    # --- pick the setting: its check passes now and exactly one control would change on its node -----
    checks0, controls0 = per_node(before, names)

    def changes(b: Break) -> set[str]:
        return {c for c in owners(before, b.check) if controls0.get((b.node, c)) != "fail"}

    usable = [b for b in BREAKS if checks0.get((b.node, b.check)) in ("pass", "waived")
              and len(changes(b)) == 1 and not changes(b) & red(before)]
    assert usable, f"no setting to break: {[(b.node, b.check, checks0.get((b.node, b.check))) for b in BREAKS]}"
    brk = usable[0]
    (control,) = changes(brk)
    print(f"breaking on {brk.node}: {brk.what} ({brk.check.split('::')[1]}, control {control})")
    ip = site.ip(brk.node)

    try:
        r = nodes.ssh(ip, brk.cmd)
        assert r.returncode == 0, r.stderr
        after = bundle("after")
    finally:
        r = nodes.ssh(ip, brk.restore)
        assert r.returncode == 0, f"restoring {brk.what} on {brk.node} failed: {r.stderr}"

    checks1, controls1 = per_node(after, names)
    # Only the broken check on the broken node changed; every other node's results are the same.
    changed = {k for k in checks0.keys() | checks1.keys() if checks0.get(k) != checks1.get(k)}
    assert changed == {(brk.node, brk.check)} and checks1[(brk.node, brk.check)] == "fail", changed
    assert controls0[(brk.node, control)] in ("pass", "waived") and controls1[(brk.node, control)] == "fail"
    red0 = {k for k, s in controls0.items() if s == "fail"}
    red1 = {k for k, s in controls1.items() if s == "fail"}
    assert red1 - red0 == {(brk.node, control)} and not red0 - red1
    # And in the signed bundle, exactly that control turned red.
    assert red(after) - red(before) == {control} and not red(before) - red(after)
    html = (work / "bundle-after" / "report.html").read_text(encoding="utf-8")
    assert f'<tr id="{control}" class="status-fail">' in html

    # --- restored: the node's audit is back to the baseline ------------------------------------------
    t = time.monotonic()
    report = audit(inv, f"ansible://{brk.node}", work / "restored")
    got, _ = read_results(report, REPO)
    timings[f"audit of {brk.node} (restored)"] = time.monotonic() - t
    restored = {(r.where, r.check): r.status for r in got}
    baseline = {k: s for k, s in checks0.items() if k[0] == brk.node}
    assert {k: restored.get(k) for k in baseline} == baseline
    assert restored[(brk.node, brk.check)] in ("pass", "waived")

    for what, seconds in timings.items():
        print(f"time {what}: {seconds:.1f} s")
