"""The agents' list+watch against a real kube-apiserver + etcd on loopback (lab/loopback_apiserver.py): the
netpol agent in watch mode enforces a policy's creation, change and deletion as they happen, with one list
per collection; and a watch from a version the server no longer has ends in the 410 the informer relists on."""

from __future__ import annotations

import threading

import pytest

from agents import kubeapi
from agents.netpol import COLLECTIONS, NAMESPACES, PODS, POLICIES, Enforcer
from lab.loopback_apiserver import LoopbackApiserver
from tests.agents.test_kubeapi import eventually
from tests.conftest import require_tool

pytestmark = pytest.mark.tools
AGENT = "netpol-agent"


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    require_tool("kube-apiserver")
    require_tool("etcd")
    with LoopbackApiserver(tmp_path_factory.mktemp("apiserver"), audited=(AGENT,)) as api:
        yield api


def _policy(cidr: str) -> dict:
    return {"metadata": {"name": "gw"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]}}


def test_watch_mode_enforces_changes_as_they_happen_with_one_list(apiserver):
    api = apiserver
    api.call("POST", NAMESPACES, {"metadata": {"name": "app"}})
    api.call("POST", "/api/v1/namespaces/app/pods", {
        "metadata": {"name": "web"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x.invalid/c"}]}})
    api.call("PATCH", "/api/v1/namespaces/app/pods/web/status",
             {"status": {"phase": "Running", "podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.2"}]}}, patch=True)
    cert, key = api.identity(AGENT)
    args = kubeapi.arguments("t").parse_args(["--server", api.server, "--ca", str(api.ca), "--cert", str(cert),
                                              "--key", str(key)])
    loaded: list[str] = []
    stop = threading.Event()
    agent = threading.Thread(target=kubeapi.serve, daemon=True, args=(
        Enforcer("n1", load=loaded.append).sync, kubeapi.Client(api.server, str(api.ca), str(cert), str(key)),
        COLLECTIONS, args, stop))
    agent.start()
    policies = "/apis/networking.k8s.io/v1/namespaces/app/networkpolicies"
    try:
        eventually(lambda: loaded, seconds=30, what="first rules")
        assert "jump" not in loaded[-1]  # no policy yet: the pod is not isolated
        api.call("POST", policies, _policy("10.9.0.1/32"))
        eventually(lambda: "ip saddr 10.9.0.1/32 return" in loaded[-1], seconds=10, what="policy enforced")
        api.call("PATCH", f"{policies}/gw", {"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.9.0.7/32"}}]}]}},
                 patch=True)
        eventually(lambda: "ip saddr 10.9.0.7/32 return" in loaded[-1], seconds=10, what="change enforced")
        api.call("DELETE", f"{policies}/gw")
        eventually(lambda: "jump" not in loaded[-1], seconds=10, what="deletion enforced")
    finally:
        stop.set()
        agent.join(15)
    assert not agent.is_alive()
    verbs = {(verb, resource): n for (user, verb, resource), n in api.requests().items() if user == AGENT}
    assert verbs[("list", "pods")] == verbs[("list", "networkpolicies")] == 1  # no polling
    assert verbs[("watch", "networkpolicies")] >= 1


def test_a_watch_from_a_version_long_gone_is_410(apiserver):
    cert, key = apiserver.identity(AGENT)
    client = kubeapi.Client(apiserver.server, str(apiserver.ca), str(cert), str(key))
    for i in range(3):  # history to have moved past version 1
        apiserver.call("POST", "/api/v1/namespaces", {"metadata": {"name": f"moved-{i}"}})
    try:
        with client.watch(POLICIES, "1", 5) as w:
            first = next(iter(w))
        assert first["type"] == "ERROR" and first["object"]["code"] == 410, first
    except kubeapi.Gone:
        pass  # an older server answers the status itself: the informer takes both as 410
    _, version = client.list(PODS)
    with client.watch(PODS, version, 1) as w:  # the control: a current version watches (and ends on time)
        assert [e for e in w if e["type"] == "ERROR"] == []
