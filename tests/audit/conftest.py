"""Compliance audit plugin: control marker, waivers, JUnit + JSON + HTML reports (control, node, result,
evidence).

Collects nothing unless `--hosts` is given, so the main test run never audits the developer machine.
Compliance teams run (see tests/audit/README.md):

    python -m pytest tests/audit --sudo --hosts=ansible://all --ansible-inventory=INV --audit-report=DIR
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import html
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
GROUP_ROLES = ("control_plane", "worker", "gateway")
# Ansible's default persistent_connection.control_path_dir, where testinfra looks for it.
ANSIBLE_CONTROL_PATH_DIR = Path("~/.ansible/cp")


@dataclass(frozen=True)
class Waiver:
    control: str
    node: str  # fnmatch glob
    owner: str
    reason: str
    expires: dt.date

    def matches(self, control: str, node: str) -> bool:
        return self.control == control and fnmatch.fnmatch(node, self.node)

    def expired(self, today: dt.date) -> bool:
        return self.expires < today


def load_waivers(path: Path) -> list[Waiver]:
    """Parse the waiver file; any bad entry is a usage error naming the entry and field."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise pytest.UsageError(f"--audit-waivers {path}: cannot read: {e}") from e
    entries = data.get("waivers") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise pytest.UsageError(f"--audit-waivers {path}: expected a top-level `waivers:` list")
    out = []
    for i, e in enumerate(entries):
        where = f"--audit-waivers {path}: waivers[{i}]"
        if not isinstance(e, dict):
            raise pytest.UsageError(f"{where}: must be a mapping")
        for field in ("control", "node", "owner", "reason", "expires"):
            if not e.get(field):
                raise pytest.UsageError(f"{where}: missing `{field}` (every waiver needs control, node glob, "
                                        "owner, reason and expires: YYYY-MM-DD)")
        expires = e["expires"]
        if not isinstance(expires, dt.date):
            try:
                expires = dt.date.fromisoformat(str(expires))
            except ValueError as err:
                raise pytest.UsageError(
                    f"{where}: `expires` must be a date YYYY-MM-DD, got {expires!r}") from err
        if not str(e["control"]).startswith("SC-"):
            raise pytest.UsageError(f"{where}: `control` must be a control ID like SC-HST-03")
        out.append(Waiver(str(e["control"]), str(e["node"]), str(e["owner"]), str(e["reason"]), expires))
    return out


def _matching(waivers: list[Waiver], controls: list[str], node: str) -> list[Waiver]:
    return [w for w in waivers for c in controls if w.matches(c, node)]


def cover(waivers: list[Waiver], controls: list[str], node: str,
          today: dt.date) -> tuple[list[Waiver], list[str]]:
    """(valid waivers covering `controls` on `node`, the controls no valid waiver covers).

    A failing check fails every control it is marked with, so it is waived only when each one of them has an
    unexpired waiver for the node: a waiver of SC-LOG-01 does not accept a failure of SC-K8S-04 that the same
    check proves. (Waivers stay per control and node, not per check: a control's owner accepts its failures.)
    """
    covering, uncovered = [], []
    for control in controls:
        valid = [w for w in waivers if w.matches(control, node) and not w.expired(today)]
        if valid:
            covering.append(valid[0])
        else:
            uncovered.append(control)
    return covering, uncovered


def pytest_addoption(parser):
    g = parser.getgroup("audit", "sovcloud compliance audit")
    g.addoption("--audit-report", metavar="DIR", help="write audit-junit.xml, audit.json, audit.html here")
    g.addoption("--audit-waivers", metavar="FILE", help="YAML waivers (control, node glob, owner, reason, "
                "expires); an expired waiver fails the run")
    g.addoption("--audit-roles", metavar="GLOB=ROLE,...", default="",
                help="node role by name glob, for backends without inventory groups (ssh://, podman://)")
    g.addoption("--audit-today", metavar="YYYY-MM-DD",
                help="evaluate waiver expiry as of this date (default: today, UTC)")


def _hosts_given(config) -> bool:
    return bool(getattr(config.option, "hosts", None))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    config.addinivalue_line("markers", "control(*ids): the control ID(s) this audit check proves")
    if not _hosts_given(config):
        return
    if "ansible://" in str(config.option.hosts):
        # testinfra multiplexes its SSH commands only when Ansible's control-path directory exists; Ansible
        # makes it on first use of its ssh plugin, which the playbooks' mitogen strategy never uses. Without it
        # every check opens a new connection (~10x slower over a whole inventory).
        ANSIBLE_CONTROL_PATH_DIR.expanduser().mkdir(mode=0o700, parents=True, exist_ok=True)
    report = config.getoption("--audit-report")
    if report:
        Path(report).mkdir(parents=True, exist_ok=True)
        if not config.option.xmlpath:
            config.option.xmlpath = str(Path(report) / "audit-junit.xml")
    today = config.getoption("--audit-today")
    try:
        today_d = dt.date.fromisoformat(today) if today else dt.datetime.now(dt.UTC).date()
    except ValueError as e:
        raise pytest.UsageError(f"--audit-today must be YYYY-MM-DD, got {today!r}") from e
    waivers_path = config.getoption("--audit-waivers")
    waivers = load_waivers(Path(waivers_path)) if waivers_path else []
    roles = []
    for part in filter(None, (p.strip() for p in config.getoption("--audit-roles").split(","))):
        glob, _, role = part.partition("=")
        if role not in GROUP_ROLES:
            raise pytest.UsageError(f"--audit-roles {part!r}: role must be one of {GROUP_ROLES}")
        roles.append((glob, role))
    config.stash[AUDIT] = AuditState(today_d, waivers, roles, Path(report) if report else None)
    if config.pluginmanager.hasplugin("xdist") and not _is_worker(config):
        config.pluginmanager.register(XdistResults(config.stash[AUDIT]), "sovcloud-audit-xdist")


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")  # pytest-xdist's worker process


class XdistResults:
    """With pytest-xdist (`-n N`) the checks run in worker processes: each hands its results back when it
    finishes, and the controller writes the one report (a worker writes none)."""

    def __init__(self, state: AuditState):
        self.state = state

    def pytest_testnodedown(self, node, error):
        self.state.results.extend(getattr(node, "workeroutput", {}).get(WORKER_RESULTS, []))


@dataclass
class AuditState:
    today: dt.date
    waivers: list[Waiver]
    roles: list[tuple[str, str]]
    report: Path | None

    def __post_init__(self):
        self.results: list[dict] = []


AUDIT = pytest.StashKey[AuditState]()
WORKER_RESULTS = "sovcloud_audit_results"


def pytest_ignore_collect(collection_path, config):
    # Without --hosts testinfra would audit the local machine: collect nothing instead.
    is_test = collection_path.suffix == ".py" and collection_path.name.startswith("test_")
    if is_test and not _hosts_given(config):
        return True
    return None


def node_name(host) -> str:
    # The name the run was given (inventory name, container name, ssh host), as waivers match it.
    return str(host.backend.hostname)


@pytest.fixture
def node(host) -> str:
    return node_name(host)


@pytest.fixture
def audit_today(request) -> dt.date:
    """The date the run judges by (--audit-today, else today UTC): waivers' expiry and releases' end of life."""
    return request.config.stash[AUDIT].today


@pytest.fixture
def evidence(request) -> list[str]:
    """Tests append what they observed; it lands in the JSON/HTML report next to the result."""
    lst: list[str] = []
    request.node.audit_evidence = lst
    return lst


@pytest.fixture
def node_role(host, request) -> str:
    """The node's role: inventory groups (ansible://), else --audit-roles globs; unknown fails the check."""
    name = node_name(host)
    if type(host.backend).__name__ == "AnsibleBackend":
        groups = host.ansible.get_variables().get("group_names", [])
        for role in GROUP_ROLES:
            if role in groups:
                return role
    for glob, role in request.config.stash[AUDIT].roles:
        if fnmatch.fnmatch(name, glob):
            return role
    pytest.fail(f"node {name}: role unknown; put it in an inventory group {GROUP_ROLES} or pass "
                f"--audit-roles 'GLOB=ROLE'")


def controls_of(item) -> list[str]:
    return [c for m in item.iter_markers("control") for c in m.args]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    state = item.config.stash.get(AUDIT, None)
    if state is None or (rep.when != "call" and not (rep.when == "setup" and not rep.passed)):
        return
    controls = controls_of(item)
    host = item.funcargs.get("host") if hasattr(item, "funcargs") else None
    node = node_name(host) if host is not None else "?"
    result = {"passed": "pass", "failed": "fail", "skipped": "n/a"}[rep.outcome]
    message = ""
    if rep.failed:
        crash = getattr(rep.longrepr, "reprcrash", None)
        message = str(crash.message if crash is not None else rep.longrepr)
    elif rep.skipped and isinstance(rep.longrepr, tuple):
        message = rep.longrepr[2]
    waiver, covering = None, []
    if rep.failed and rep.when == "call":
        covering, uncovered = cover(state.waivers, controls, node, state.today)
        if covering and not uncovered:
            # Reported as xfail: visible as waived in JUnit and the console, never as a pass.
            waiver = min(covering, key=lambda w: w.expires)  # the one that runs out first bounds the acceptance
            rep.outcome = "skipped"
            rep.wasxfail = "; ".join(f"WAIVED {w.control} ({w.owner}, until {w.expires}): {w.reason}"
                                     for w in covering)
            result = "waived"
        else:
            expired = [w for w in _matching(state.waivers, controls, node) if w.expired(state.today)]
            waiver = expired[0] if expired else None  # shown as EXPIRED next to the failure
            if covering:
                # Failing, and saying why: a waiver of one control the check proves does not accept the others.
                message = (f"not waived: no valid waiver of {', '.join(uncovered)} on {node} (waived only: "
                           f"{', '.join(w.control for w in covering)})\n{message}")
    state.results.append({
        "test": item.originalname if hasattr(item, "originalname") else item.name,
        "nodeid": item.nodeid, "control": controls[0] if controls else None, "controls": controls,
        "node": node, "result": result, "evidence": getattr(item, "audit_evidence", []),
        "message": message[:2000],
        "waiver": None if waiver is None else {"owner": waiver.owner, "reason": waiver.reason,
                                               "expires": waiver.expires.isoformat(),
                                               "expired": waiver.expired(state.today)},
        # Every control's waiver when the check is waived (one per control it proves).
        "waivers": [{"control": w.control, "owner": w.owner, "expires": w.expires.isoformat()}
                    for w in covering] if result == "waived" else [],
    })


def pytest_collection_modifyitems(config, items):
    if AUDIT not in config.stash:
        return
    for item in items:
        if not controls_of(item):
            raise pytest.UsageError(f"{item.nodeid}: every audit test needs @pytest.mark.control('SC-...')")


def pytest_sessionfinish(session, exitstatus):
    state = session.config.stash.get(AUDIT, None)
    if state is None:
        return
    if _is_worker(session.config):
        session.config.workeroutput[WORKER_RESULTS] = state.results
        return
    expired = [w for w in state.waivers if w.expired(state.today)]
    if expired and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if state.report is None:
        return
    summary: dict[str, int] = {}
    for r in state.results:
        summary[r["result"]] = summary.get(r["result"], 0) + 1
    doc = {
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "today": state.today.isoformat(),
        "hosts": session.config.option.hosts,
        "summary": summary,
        "expired_waivers": [{"control": w.control, "node": w.node, "owner": w.owner, "reason": w.reason,
                             "expires": w.expires.isoformat()} for w in expired],
        "ok": session.exitstatus == 0,
        "results": sorted(state.results, key=lambda r: (r["nodeid"], r["node"])),  # the same with or without -n
    }
    (state.report / "audit.json").write_text(json.dumps(doc, indent=2))
    (state.report / "audit.html").write_text(render_html(doc))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = config.stash.get(AUDIT, None)
    if state is None:
        return
    for w in state.waivers:
        if w.expired(state.today):
            terminalreporter.write_line(f"EXPIRED WAIVER {w.control} node={w.node} owner={w.owner} "
                                        f"expired {w.expires}: the run fails until it is renewed or removed",
                                        red=True)


COLOURS = {"pass": "#c8e6c9", "fail": "#ffcdd2", "waived": "#fff9c4", "n/a": "#eeeeee"}


def render_html(doc: dict) -> str:
    rows = []
    for r in sorted(doc["results"], key=lambda r: (r["node"], r["control"] or "", r["test"])):
        waiver = r["waiver"]
        note = r["message"] or ""
        if waiver:
            note = f"waived by {waiver['owner']} until {waiver['expires']}: {waiver['reason']}\n{note}"
        rows.append(
            f"<tr style='background:{COLOURS.get(r['result'], '#fff')}'><td>{html.escape(r['control'] or '')}"
            f"</td><td>{html.escape(r['node'])}</td><td>{html.escape(r['test'])}</td><td>{r['result']}</td>"
            f"<td><pre>{html.escape(chr(10).join(r['evidence']))}</pre></td>"
            f"<td><pre>{html.escape(note)}</pre></td></tr>")
    expired = "".join(f"<li>{html.escape(w['control'])} {html.escape(w['node'])} "
                      f"({html.escape(w['owner'])}) expired {w['expires']}</li>"
                      for w in doc["expired_waivers"])
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>sovcloud compliance audit</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #999;padding:4px;vertical-align:top}"
        "table{border-collapse:collapse}pre{margin:0;white-space:pre-wrap}</style></head><body>"
        f"<h1>sovcloud compliance audit</h1><p>Generated {doc['generated']} for "
        f"{html.escape(str(doc['hosts']))}"
        f" &mdash; overall: <b>{'PASS' if doc['ok'] else 'FAIL'}</b> &mdash; "
        f"{html.escape(json.dumps(doc['summary']))}</p>"
        + (f"<h2>Expired waivers (fail the run)</h2><ul>{expired}</ul>" if expired else "")
        + "<table><tr><th>Control</th><th>Node</th><th>Check</th><th>Result</th><th>Evidence</th>"
        "<th>Notes</th></tr>" + "".join(rows) + "</table></body></html>")
