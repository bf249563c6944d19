"""Static checks of the hardening code and unit tests of the audit plugin (no lab needed)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.standalone import ansible_env, parse_recap
from tests.audit.conftest import load_waivers
from toolchain import REPO

ROLES = REPO / "playbooks" / "roles"
VENV_BIN = Path(sys.executable).parent
CONTROL_IDS = {c["id"] for c in yaml.safe_load((REPO / "policies" / "controls.yaml").read_text())["controls"]}


def _run(*cmd: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, env=ansible_env(), cwd=REPO, timeout=600,
                          **kw)


def test_playbook_syntax():
    r = _run(str(VENV_BIN / "ansible-playbook"), "-i", "playbooks/inventory/example.yml", "--syntax-check",
             "playbooks/site.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ansible_lint_production_profile():
    # The four roles share the `hardening_` prefix on purpose (site.yml sets hardening_node_role for all).
    r = _run(str(VENV_BIN / "ansible-lint"), "--offline", "--nocolor", "--profile", "production",
             "--skip-list", "var-naming[no-role-prefix]", "playbooks/site.yml",
             *map(str, sorted(ROLES.glob("hardening_*"))))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


def test_yamllint():
    r = _run(str(VENV_BIN / "yamllint"), "-s", "playbooks", "tests/playbooks/lab-waivers.yml")
    assert r.returncode == 0, r.stdout


def _tasks():
    for f in sorted(ROLES.glob("hardening_*/tasks/*.yml")) + sorted(ROLES.glob("hardening_*/handlers/*.yml")):
        for task in yaml.safe_load(f.read_text()) or []:
            yield f, task


def test_every_task_names_its_controls():
    seen = set()
    for f, task in _tasks():
        tags = task.get("tags", [])
        ids = [t for t in tags if t.startswith("SC-")]
        assert ids or tags == ["always"], f"{f.name}: task {task.get('name')!r} has no control tag"
        for t in ids:
            assert t in task.get("name", "") or "import_tasks" in str(task) or f.parent.name == "handlers", \
                f"{f.name}: {task.get('name')!r} does not name control {t}"
        seen.update(ids)
    assert seen <= CONTROL_IDS, f"unknown control IDs: {seen - CONTROL_IDS}"
    assert {"SC-HST-01", "SC-HST-02", "SC-HST-03", "SC-HST-04", "SC-HST-05", "SC-HST-06", "SC-HST-07",
            "SC-HST-08", "SC-HST-09", "SC-LOG-01", "SC-LOG-02", "SC-K8S-04"} <= seen


def test_every_default_names_its_control():
    for f in sorted(ROLES.glob("hardening_*/defaults/main.yml")):
        text = f.read_text()
        for name in yaml.safe_load(text):
            # The control ID is in the variable's own comment or in the section header above it.
            before = text[: text.index(f"\n{name}:")]
            assert "SC-" in before.splitlines()[-1] or "SC-" in text[text.index(f"\n{name}:"):].split("\n")[1] \
                or "SC-" in before.rsplit("# ---", 1)[-1] or "SC-" in before.rsplit("\n\n", 1)[-1], \
                f"{f}: {name} names no control"


def test_parse_recap():
    out = ("PLAY RECAP *****\nhx-cp                      : ok=80   changed=0    unreachable=0    failed=0    "
           "skipped=9\nhx-w : ok=7 changed=3 unreachable=1 failed=2 skipped=0\n")
    assert parse_recap(out) == {"hx-cp": {"ok": 80, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 9},
                                "hx-w": {"ok": 7, "changed": 3, "unreachable": 1, "failed": 2, "skipped": 0}}


def test_waiver_file_errors_name_the_field(tmp_path):
    p = tmp_path / "w.yml"
    p.write_text("waivers:\n  - {control: SC-HST-03, node: 'a*', owner: x, expires: 2030-01-01}\n")
    with pytest.raises(pytest.UsageError, match=r"waivers\[0\]: missing `reason`"):
        load_waivers(p)
    p.write_text("waivers:\n  - {control: SC-HST-03, node: 'a*', owner: x, reason: y, expires: soon}\n")
    with pytest.raises(pytest.UsageError, match="`expires` must be a date"):
        load_waivers(p)
    p.write_text("waivers:\n  - {control: SC-HST-03, node: 'a*', owner: x, reason: y, expires: 2030-01-01}\n")
    (w,) = load_waivers(p)
    assert w.matches("SC-HST-03", "abc") and not w.matches("SC-HST-03", "b") and not w.matches("SC-HST-04", "a")
    assert w.expired(dt.date(2030, 1, 2)) and not w.expired(dt.date(2030, 1, 1))


def test_audit_collects_nothing_without_hosts():
    r = _run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/audit", "--collect-only")
    assert r.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, r.stdout


def _audit_local(tmp_path: Path, today: str) -> tuple[int, dict]:
    # Only the banner check, against this machine, on purpose: it reads /etc/issue.net and sshd -T.
    waivers = tmp_path / "waivers.yml"
    waivers.write_text("waivers:\n  - {control: SC-HST-09, node: 'local*', owner: sec@example, "
                       "reason: dev box, expires: 2030-01-01}\n")
    (tmp_path / "issue").write_text("")
    report = tmp_path / f"rep-{today}"
    r = _run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/audit", "--hosts=local://",
             "-k", "test_SC_HST_09_login_banner", f"--audit-report={report}", f"--audit-waivers={waivers}",
             f"--audit-today={today}", "-o", "addopts=")
    return r.returncode, json.loads((report / "audit.json").read_text())


def test_audit_waiver_and_expiry(tmp_path):
    banner = Path("/etc/issue.net")
    if banner.exists() and "Authorised use only" in banner.read_text():
        pytest.fail("this check needs a machine without the sovcloud banner (it asserts a waived failure)")
    rc, doc = _audit_local(tmp_path, "2029-12-31")
    (res,) = doc["results"]
    assert (rc, res["result"], res["control"], res["node"]) == (0, "waived", "SC-HST-09", "local")
    assert res["evidence"] and not doc["expired_waivers"]
    assert (tmp_path / "rep-2029-12-31" / "audit-junit.xml").exists()
    assert "waived" in (tmp_path / "rep-2029-12-31" / "audit.html").read_text()
    rc, doc = _audit_local(tmp_path, "2030-01-02")
    assert rc != 0 and doc["results"][0]["result"] == "fail" and doc["expired_waivers"][0]["control"] == "SC-HST-09"


def test_the_example_inventory_gives_the_stacks_ports():
    """The example inventory repeats the ports the stack passes every playbook: they must be the stack's."""
    from infra import components

    example = yaml.safe_load((REPO / "playbooks" / "inventory" / "example.yml").read_text())["all"]["vars"]
    assert {k: example[k] for k in ("cluster_api_port", "internet_gateway_proxy_port",
                                    "internet_gateway_health_port")} == {
        "cluster_api_port": components.API_PORT, "internet_gateway_proxy_port": components.EGRESS_PROXY_PORT,
        "internet_gateway_health_port": components.HEALTH_PORT}
