"""The audit's positive control: on fresh lab nodes of each role (an OS and sshd, nothing hardened) it fails, on
the controls the hardening is for.

The rest of the hardening's story is told on the deployed lab, by the same playbook through `pulumi up`: the
audit passes there with only the container's kernel limits waived, and one broken setting turns exactly its
control red (tests/policies/test_evidence_lab.py); a second run changes nothing (tests/cluster/test_cluster.py
replays it). Hardening these nodes twice more here took 5 of CI's minutes and proved nothing new."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import standalone as ls

NODES = {"hx-cp": "control_plane", "hx-w": "worker", "hx-gw": "gateway"}
WAIVERS = Path(__file__).with_name("lab-waivers.yml")
# Controls an unhardened node must fail (the lab image only has keys-only sshd and a locked root).
EXPECT_FAIL_BEFORE = {"SC-HST-01", "SC-HST-02", "SC-HST-04", "SC-HST-06", "SC-HST-07", "SC-HST-08",
                      "SC-HST-09", "SC-LOG-02"}

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab_nodes(tmp_path_factory):
    repo = ls.ensure_offline_repo()
    nodes = {}
    try:
        for name, group in NODES.items():
            nodes[name] = (ls.start_node(name), group)
        yield tmp_path_factory.mktemp("hardening"), nodes, repo
    finally:
        for name in NODES:
            ls.remove_node(name)


def failed_controls(results: list[dict]) -> set[str]:
    return {c for r in results if r["result"] == "fail" for c in r["controls"]}


def test_unhardened_nodes_fail_the_audit_on_the_hardening_controls(lab_nodes):
    work, nodes, repo = lab_nodes
    inv = ls.write_inventory(work / "inventory.yml", nodes, repo)
    rc, before, _ = ls.run_audit(inv, work / "before", WAIVERS, extra=["--sudo"])
    assert rc == 1, f"audit of unhardened nodes: exit {rc} (0 = passed, other = broken audit)"
    assert {r["node"] for r in before} == set(NODES)
    assert all(r["control"] and r["control"].startswith("SC-") for r in before)
    for name in NODES:
        fails = failed_controls([r for r in before if r["node"] == name])
        assert fails >= EXPECT_FAIL_BEFORE, f"{name}: unhardened audit missed {EXPECT_FAIL_BEFORE - fails}"
    for fmt in ("audit.json", "audit.html", "audit-junit.xml"):
        assert (work / "before" / fmt).stat().st_size > 0
