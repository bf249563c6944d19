"""Site failover executed on the deployed lab through the stack's inventory (SSH) and outputs, as on any
inventory: dc-almaty takes over the published portal (infra stack gateway.published_services) through its own
gateway from the backup at its own S3, then fails back. The lab's state is restored afterwards: neither
gateway has a route for the hostname, no backend runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dr import jobs, runbook
from dr.config import load_config
from lab import api, inventory

pytestmark = [pytest.mark.lab, pytest.mark.tools]
STACK = Path(__file__).resolve().parents[2] / "infra" / "stacks" / "lab.yaml"


@pytest.fixture(scope="module")
def lab(lab_deployment):
    return lab_deployment["config"]


@pytest.fixture(scope="module")
def sites(lab_outputs):
    return runbook.StackSites(lab_outputs)


@pytest.fixture(scope="module")
def published():
    """The stack's published service and its site (the site that serves it while nothing has failed)."""
    svc = yaml.safe_load(STACK.read_text())["gateway"]["published_services"][0]
    return runbook.Service(svc["name"], svc["hostname"], f"{svc['name']}-data"), svc["site"]


@pytest.mark.control("SC-BCK-02", "SC-AVL-01")
def test_failover_and_failback_of_a_published_service(lab, sites, published, tmp_path):
    svc, primary = published
    secondary = next(s.name for s in lab.sites if s.name != primary)
    dr_cfg = load_config(inventory.state_dir(lab) / "dr" / "dr.json").model_copy(
        update={"staging_dir": tmp_path / "staging"})
    data = tmp_path / "portal"
    data.mkdir()
    (data / "index.html").write_text("<h1>eGov portal</h1>\n")
    (data / "services.json").write_text('{"services": 1200}\n')
    try:
        sites.publish(primary, svc, data)
        assert sites.get(primary, svc).text == "<h1>eGov portal</h1>\n"
        assert not sites.serves(secondary, svc)  # the secondary does not serve it (yet)
        rep = jobs.backup_dir(dr_cfg, data, svc.dataset, primary)
        assert rep.verified_sites == [primary, secondary], rep.to_dict()

        fo = runbook.failover(dr_cfg, sites, svc, primary, secondary)
        print(f"failover {primary} -> {secondary}: {fo['seconds']}")
        assert fo["executed"] and fo["state"]["internet_gateway"]["routes_to"] == secondary
        assert fo["state"]["sites"][primary]["role"] == "fenced"
        r = sites.get(secondary, svc)
        assert r.status_code == 200 and r.text == "<h1>eGov portal</h1>\n"
        assert sites.get(secondary, svc, "/services.json").json() == {"services": 1200}
        assert not sites.serves(primary, svc)  # fenced: never served by two sites

        # While the secondary is active the data changes; failback must keep that change.
        for ip in sites.workers(secondary):
            sites._ssh(ip, f"echo '{{\"services\": 1201}}' | sudo tee {runbook.PUBLISH_DIR}/{svc.name}/services.json")
        fb = runbook.failback(dr_cfg, sites, svc, secondary, primary, fo["state"])
        print(f"failback {secondary} -> {primary}: {fb['seconds']}")
        assert fb["restored_backup"].startswith(f"{secondary}/{svc.dataset}@")
        assert fb["state"]["internet_gateway"]["routes_to"] == primary
        assert sites.get(primary, svc, "/services.json").json() == {"services": 1201}
        assert not sites.serves(secondary, svc)
    finally:
        for site in (primary, secondary):
            sites.unpublish(site, svc)
    for site in (primary, secondary):  # back to the lab's state: the hostname is routed nowhere
        assert not sites.serves(site, svc)
    api.wait_healthy(lab, deadline_s=90)  # bounded: others' playbooks may be restarting a node's sshd right now
