"""docs/disaster-recovery.md, followed as written on the deployed lab: its verbatim block (verify what the
stations' timers backed up, restore a tenant namespace and an etcd snapshot, drill etcd and a namespace,
sync, retention, the station's timers) runs as pasted and each step does what the guide says."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.docs import verbatim_block
from tests.monitoring.prom import wait_until
from toolchain import REPO

GUIDE = REPO / "docs" / "disaster-recovery.md"
MARK = "<!-- verbatim: tests/dr/test_guide_lab.py -->"


def test_the_guides_block_is_found():
    block = verbatim_block(GUIDE, MARK)
    assert block.startswith("source .venv/bin/activate\n") and "$DR drill --namespace egov-prod" in block


def outputs(stdout: str) -> list:
    """The JSON documents `python -m dr` printed, in order."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while (m := re.compile(r"^[\[{]", re.M).search(stdout, i)) is not None:
        doc, i = decoder.raw_decode(stdout, m.start())
        docs.append(doc)
    return docs


@pytest.mark.lab
@pytest.mark.control("SC-BCK-01", "SC-BCK-02")
@pytest.mark.timeout(900)
def test_the_operators_guide_runs_verbatim_on_the_deployed_lab(lab_deployment):
    block = verbatim_block(GUIDE, MARK)

    def scheduled_backups_exist() -> bool:
        # The guide starts from what the stations' timers made (first runs a few minutes after deployment).
        first = "\n".join(block.splitlines()[:6])
        return subprocess.run(["bash", "-e", "-c", first], cwd=REPO, capture_output=True, timeout=300).returncode == 0

    wait_until(scheduled_backups_exist, 600, "the stations' first scheduled backups", every_s=15)
    r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=REPO, capture_output=True, text=True,
                       timeout=800)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    verify_etcd, verify_tenant, tenant, etcd, drill, ns_drill, sync, prune = outputs(r.stdout)[:8]
    assert set(verify_etcd) == set(verify_tenant) == {"dc-astana", "dc-almaty"}
    assert all(v.startswith("verified") for v in [*verify_etcd.values(), *verify_tenant.values()])
    assert tenant["restored_from"] and etcd["restored_from"]
    assert drill["ok"] and drill["rto_seconds"] > 0 and ns_drill["ok"], (drill, ns_drill)
    assert not any(c["failed"] for c in sync["replicated"]), sync
    assert all("kept_by_lock" in site for site in prune), prune
    assert "sovcloud-dr-drill.timer" in r.stdout and "sovcloud-dr-etcd-snapshot.timer" in r.stdout
