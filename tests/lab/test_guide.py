"""docs/deploying.md, followed as written: its commands run verbatim against the deployed lab (machines the
stack reaches only by their SSH addresses). They succeed, and the second `pulumi up` of the stack they make
changes nothing: every host step (hardening, network, cluster) and every other resource stays as it is."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.docs import verbatim_block
from toolchain import REPO

GUIDE = REPO / "docs" / "deploying.md"
MARK = "<!-- verbatim: tests/lab/test_guide.py -->"


def test_verbatim_block_is_found():
    block = verbatim_block(GUIDE, MARK)
    assert block.startswith("make setup\n") and "pulumi up --stack lab" in block


@pytest.mark.lab
@pytest.mark.tools
def test_the_guide_deploys_the_lab_stack_as_written_and_a_second_up_changes_nothing(lab_deployment):
    block = verbatim_block(GUIDE, MARK)
    # Each command as the guide gives it; the block's outputs end with the `sites` output (JSON).
    r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=REPO, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    summary = r.stdout.split("Resources:", 2)
    assert len(summary) == 3, "expected a preview and an up summary"
    for part in summary[1:]:
        counts = part.split("Duration:")[0] if "Duration:" in part else part[:300]
        assert re.search(r"\d+ unchanged", counts), counts
        assert not re.search(r"\d+ (to create|to update|to delete|to replace|created|updated|deleted|replaced)",
                             counts), counts
    sites = json.loads(r.stdout[r.stdout.rindex("\n{") + 1:])
    assert sites["dc-astana"]["gateway"]["public_address"] == "10.210.200.20"
    assert sites["dc-almaty"]["api"] == "https://10.210.2.15:6443"
