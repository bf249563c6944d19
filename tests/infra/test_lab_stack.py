"""The real engine on the real program: up -> no-op preview -> one field changed -> only the expected
resources change -> destroy leaves nothing."""

import json

import pytest
from pulumi import automation as auto

from infra.automation import changed_resources, stack
from tests.infra.conftest import lab_data

pytestmark = pytest.mark.tools


def preview_changes(st: auto.Stack, **kwargs) -> dict[str, str]:
    events: list[auto.EngineEvent] = []
    st.preview(on_event=events.append, **kwargs)
    return changed_resources(events)


def test_up_noop_targeted_change_destroy(tmp_path):
    cloud = lab_data()
    st = stack("lab", cloud, work_dir=tmp_path / "ws", backend=tmp_path / "state")
    up = st.up()
    assert up.summary.result == "succeeded"
    created = up.summary.resource_changes["create"]
    assert created > 25
    # Every control a stack setting decides (policies/rules.py), passed by the lab stack.
    assert up.outputs["compliance"].value == {c: "pass" for c in (
        "SC-AVL-02", "SC-AVL-03", "SC-BCK-03", "SC-CRY-01", "SC-CRY-03", "SC-DATA-01", "SC-DATA-03", "SC-K8S-05",
        "SC-K8S-06", "SC-NET-02", "SC-NET-04", "SC-NET-05", "SC-NET-06")}
    assert up.outputs["kubeconfigs"].secret
    state = "".join(p.read_text() for p in (tmp_path / "state").rglob("*.json"))
    assert "PRIVATE KEY" not in state and "ciphertext" in state  # keys live only encrypted in the state

    # Second run: nothing to do.
    assert preview_changes(st) == {}

    # Publish one more service: exactly its certificate is created and the gateway component updated.
    cloud["gateway"]["published_services"].append(
        {"name": "stat-portal", "hostname": "stat.gov.kz", "site": "dc-almaty", "backend": "stat.web:8080"})
    st.set_config("sovcloud:cloud", auto.ConfigValue(json.dumps(cloud)))
    changes = preview_changes(st)
    assert changes == {
        next(u for u in changes if u.endswith("::gateway-stat-portal")): "create",
        next(u for u in changes if u.endswith("sovcloud:index:InternetAccessGateway::gateway")): "update",
    }
    assert st.up().summary.resource_changes.get("create") == 1

    st.destroy()
    deployment = st.export_stack().deployment
    assert not deployment.get("resources")


def test_bad_config_fails_before_anything_changes(tmp_path):
    cloud = lab_data()
    cloud["sites"][1]["country"] = "DE"
    st = stack("bad", cloud, work_dir=tmp_path / "ws", backend=tmp_path / "state")
    with pytest.raises(auto.errors.CommandError) as exc:
        st.up()
    assert "sites[1].country" in str(exc.value) and "data residency" in str(exc.value)
    # The engine registers the stack's root before the program runs; nothing else may exist.
    types = {r["type"] for r in st.export_stack().deployment.get("resources", [])}
    assert types <= {"pulumi:pulumi:Stack"}
