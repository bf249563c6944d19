"""agents.kubeapi: list+watch against a fake API server on loopback (tests/agents/fake_api.py) - events applied,
410 Gone relists, a dropped watch resumes where it stopped, a resync heals a missed event - and the agent's
loop: a burst of events is one sync, nothing is synced before every collection was listed, and the netpol
agent renders the same rules whether it polls or watches."""

from __future__ import annotations

import threading
import time

import pytest

from agents import kubeapi
from agents.netpol import COLLECTIONS, NAMESPACES, PODS, POLICIES, Enforcer, render
from tests.agents.fake_api import FakeApi

CM = "/api/v1/configmaps"


@pytest.fixture
def api(tmp_path):
    server = FakeApi(tmp_path)
    yield server
    server.close()


@pytest.fixture
def client(api):
    return kubeapi.Client(api.server, api.ca, api.cert, api.key, timeout_s=5)


def cm(name: str, value: str = "1", namespace: str = "app") -> dict:
    return {"metadata": {"name": name, "namespace": namespace}, "data": {"v": value}}


def eventually(probe, seconds: float = 10, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (got := probe()):
            return got
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached in {seconds} s")


class Informed:
    """One informer on the fake API, counting its change notifications."""

    def __init__(self, client, path=CM, params=None, resync_s=300.0):
        self.changes = 0
        self.stop = threading.Event()
        self.informer = kubeapi.Informer(client, path, params or {}, self._changed, resync_s, self.stop)
        self.informer.start()
        eventually(self.informer.synced.is_set, what="first list")

    def _changed(self):
        self.changes += 1

    def values(self) -> dict[str, str]:
        return {o["metadata"]["name"]: o["data"]["v"] for o in self.informer.items()}

    def close(self):
        self.stop.set()
        self.informer.close()


@pytest.fixture
def informed(client):
    made = []

    def make(**kw):
        made.append(Informed(client, **kw))
        return made[-1]

    yield make
    for i in made:
        i.close()


def test_added_modified_and_deleted_events_are_applied_in_order(api, informed):
    api.add(CM, cm("a"))
    inf = informed()
    assert inf.values() == {"a": "1"} and inf.changes == 1
    eventually(lambda: api.open_watches(CM), what="watch open")
    api.add(CM, cm("b"))
    api.modify(CM, cm("a", "2"))
    gone = api.delete(CM, cm("b"))
    eventually(lambda: inf.values() == {"a": "2"}, what="events applied")
    assert inf.changes == 4
    # One list, then a watch from exactly the list's version.
    assert api.lists(CM) == 1
    assert api.watches(CM)[0]["resourceVersion"] == str(int(gone["metadata"]["resourceVersion"]) - 3)
    assert api.watches(CM)[0]["allowWatchBookmarks"] == "true"


def test_a_dropped_watch_resumes_from_the_last_version_seen_without_a_relist(api, informed, monkeypatch):
    monkeypatch.setattr(kubeapi, "BACKOFF_S", (0.05, 0.2))
    inf = informed()
    eventually(lambda: api.open_watches(CM), what="watch open")
    seen = api.add(CM, cm("a"))
    eventually(lambda: inf.values() == {"a": "1"}, what="first event")
    api.bookmark(CM)  # a bookmark moves the resume point without changing anything
    bookmark = str(int(seen["metadata"]["resourceVersion"]) + 1)
    eventually(lambda: inf.informer.version == bookmark, what="bookmark read by the informer")
    api.drop_watches()
    api.add(CM, cm("b"))  # while the agent is away: replayed from the server's history on resume
    eventually(lambda: inf.values() == {"a": "1", "b": "1"}, what="resumed")
    assert api.lists(CM) == 1
    assert [w["resourceVersion"] for w in api.watches(CM)][-1] == bookmark
    assert inf.changes == 3  # the list, a, b: the bookmark changed nothing


def test_a_quiet_watch_ends_on_the_servers_time_and_resumes_without_a_relist(api, informed, monkeypatch, caplog):
    monkeypatch.setattr(kubeapi, "WATCH_S", (1.0, 1.0))
    inf = informed()
    eventually(lambda: len(api.watches(CM)) >= 3, what="watches renewed")
    assert api.lists(CM) == 1
    assert {w["timeoutSeconds"] for w in api.watches(CM)} == {"1"}
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # ending on time is no failure
    api.add(CM, cm("a"))  # and the renewed watch still delivers
    eventually(lambda: inf.values() == {"a": "1"}, what="event after renewals")


def test_410_gone_relists_and_picks_up_what_happened_meanwhile(api, informed, monkeypatch):
    monkeypatch.setattr(kubeapi, "BACKOFF_S", (0.05, 0.2))
    api.add(CM, cm("a"))
    inf = informed()
    eventually(lambda: api.open_watches(CM), what="watch open")
    api.drop_watches()
    api.modify(CM, cm("a", "2"))
    api.compact()  # the resume version is gone from the server's history
    eventually(lambda: inf.values() == {"a": "2"}, what="relisted")
    assert api.lists(CM) == 2
    # Positive control for the count: without the compaction a drop resumes without listing.
    api.drop_watches()
    api.modify(CM, cm("a", "3"))
    eventually(lambda: inf.values() == {"a": "3"}, what="resumed")
    assert api.lists(CM) == 2


def test_a_resync_heals_an_event_the_watch_missed(api, informed):
    api.add(CM, cm("a"))
    slow, fast = informed(), informed(resync_s=1.0)
    eventually(lambda: api.open_watches(CM) == 2, what="watches open")
    api.modify(CM, cm("a", "missed"), silently=True)
    eventually(lambda: fast.values() == {"a": "missed"}, what="resync", seconds=10)
    assert slow.values() == {"a": "1"}  # the control: no resync within the test, nothing heals it
    # The watch ends at the resync so the relist never cuts a stream short.
    assert float(api.watches(CM)[1]["timeoutSeconds"]) <= 1


def test_labels_select_the_watched_collection_too(api, informed):
    inf = informed(params={"labelSelector": "sovcloud.kz/gateway-routes=true"})
    eventually(lambda: api.open_watches(CM), what="watch open")
    assert api.requests[0] == (CM, {"labelSelector": "sovcloud.kz/gateway-routes=true", "limit": "500"})
    assert api.watches(CM)[0]["labelSelector"] == "sovcloud.kz/gateway-routes=true"
    assert inf.values() == {}


def _agent(client, collections, sync, mode="watch", **over):
    args = kubeapi.arguments("t").parse_args(["--server", "https://x", "--ca", "c", "--cert", "c", "--key", "k",
                                              "--mode", mode])
    for k, v in over.items():
        setattr(args, k, v)
    stop = threading.Event()
    t = threading.Thread(target=kubeapi.serve, args=(sync, client, collections, args, stop), daemon=True)
    t.start()
    return stop, t


def test_a_burst_of_events_is_one_sync_that_sees_all_of_them(api, client):
    seen: list[int] = []
    stop, t = _agent(client, [(CM, {})], lambda cache: seen.append(len(cache.items(CM))) or True)
    try:
        eventually(lambda: seen == [0], what="first sync")
        eventually(lambda: api.open_watches(CM), what="watch open")
        for i in range(30):
            api.add(CM, cm(f"c{i}"))
        eventually(lambda: seen and seen[-1] == 30, what="burst synced")
        api.add(CM, cm("late"))  # the positive control: a later event syncs again
        eventually(lambda: seen[-1] == 31, what="later event synced")
        # Events are applied in order, so every sync the burst caused came before this one: the first sync,
        # one for the 30 events (or two, if the burst outlasted a settle window), and the late event's.
        assert len(seen) <= 4, seen
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()


def test_the_loop_waits_and_does_not_spin_while_a_collection_cannot_be_listed_past_its_resync_time(
        api, client, monkeypatch):
    # What a fresh cluster does to its agents: their RBAC comes minutes after they start (CI saw 17 minutes
    # of 403 at lab bring-up). The loop must wait for a collection to list, not go round without waiting once
    # its resync time has passed (it did: one core per agent).
    monkeypatch.setattr(kubeapi, "BACKOFF_S", (0.05, 0.2))
    wakeups = []
    synced = kubeapi.Watched.synced
    monkeypatch.setattr(kubeapi.Watched, "synced", lambda self: wakeups.append(1) or synced(self))
    api.fail_lists.add(NAMESPACES)
    calls = []
    stop, t = _agent(client, COLLECTIONS, lambda cache: calls.append(1) or True, resync=0.05)
    try:
        eventually(lambda: api.lists(NAMESPACES) >= 2, what="list retried")
        retried = api.lists(NAMESPACES)
        eventually(lambda: api.lists(NAMESPACES) >= retried + 3, what="namespaces listed three more times")
        # Between them the loop woke for the other collections' lists and once a second at most: a spinning
        # loop wakes hundreds of thousands of times in that span.
        assert len(wakeups) < 100, len(wakeups)
        api.fail_lists.clear()
        eventually(lambda: calls, what="first sync once listed")  # the positive control: it still syncs
    finally:
        stop.set()
        t.join(timeout=10)


def test_nothing_is_synced_before_every_collection_was_listed(api, client, monkeypatch):
    monkeypatch.setattr(kubeapi, "BACKOFF_S", (0.05, 0.2))
    api.fail_lists.add(NAMESPACES)
    calls = []
    stop, t = _agent(client, COLLECTIONS, lambda cache: calls.append(1) or True)
    try:
        eventually(lambda: api.lists(NAMESPACES) >= 2, what="list retried")
        eventually(lambda: api.open_watches(PODS) and api.open_watches(POLICIES), what="other watches")
        retried = api.lists(NAMESPACES)
        # Two more failed lists of namespaces, with the other collections watched all along: the agent's loop
        # went round meanwhile and still synced nothing.
        eventually(lambda: api.lists(NAMESPACES) >= retried + 2, what="namespaces listed twice more")
        assert calls == []  # an empty copy is not an empty cluster: the last rules stay
        api.fail_lists.clear()
        eventually(lambda: calls, what="first sync once listed")
    finally:
        stop.set()
        t.join(10)


def test_a_failed_sync_is_retried_after_the_interval(api, client):
    outcomes = [RuntimeError("nft refused"), True]
    calls = []

    def sync(cache):
        calls.append(time.monotonic())
        out = outcomes.pop(0) if outcomes else False
        if isinstance(out, Exception):
            raise out
        return out

    stop, t = _agent(client, [(CM, {})], sync, interval=0.3)
    try:
        eventually(lambda: len(calls) == 2, what="retried")
        assert 0.25 <= calls[1] - calls[0] < 2
    finally:
        stop.set()
        t.join(10)


NS = [{"metadata": {"name": "app", "labels": {"kubernetes.io/metadata.name": "app"}}}]
POD = {"metadata": {"name": "web", "namespace": "app", "labels": {"app": "web"}},
       "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
       "status": {"phase": "Running", "podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.2"}]}}


def _policy(cidr: str) -> dict:
    return {"metadata": {"name": "gw", "namespace": "app"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]}}


@pytest.mark.parametrize("mode", ["poll", "watch"])
def test_the_netpol_agent_renders_the_same_rules_polling_or_watching(api, client, mode):
    for path, obj in ((NAMESPACES, NS[0]), (PODS, POD), (POLICIES, _policy("10.9.0.1/32"))):
        api.add(path, obj)
    loaded: list[str] = []
    enforcer = Enforcer("n1", "10.0.0.0/24", load=loaded.append)
    stop, t = _agent(client, COLLECTIONS, enforcer.sync, mode=mode, interval=0.2)
    try:
        eventually(lambda: loaded, what="first rules")
        assert loaded[-1] == render("n1", [POD], NS, [_policy("10.9.0.1/32")], "10.0.0.0/24")
        api.modify(POLICIES, _policy("10.9.0.7/32"))
        eventually(lambda: "ip saddr 10.9.0.7/32 return" in loaded[-1], what="change enforced")
        assert loaded[-1] == render("n1", [POD], NS, [_policy("10.9.0.7/32")], "10.0.0.0/24")
        api.delete(POLICIES, _policy("10.9.0.7/32"))
        eventually(lambda: "jump" not in loaded[-1], what="deletion enforced")
        assert loaded[-1] == render("n1", [POD], NS, [], "10.0.0.0/24")
        assert len(loaded) == 3  # an unchanged script is not loaded again
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()
    # Poll lists every collection again and again; watch lists each once and then only waits.
    lists = api.lists(PODS)
    assert lists > 2 if mode == "poll" else lists == 1


def test_bad_intervals_are_refused_naming_the_option():
    p = kubeapi.arguments("t")
    with pytest.raises(SystemExit):
        p.parse_args(["--server", "https://x", "--ca", "c", "--cert", "c", "--key", "k", "--resync", "0"])
    ok = p.parse_args(["--server", "https://x", "--ca", "c", "--cert", "c", "--key", "k", "--resync", "60"])
    assert (ok.mode, ok.resync, ok.interval) == ("watch", 60.0, 2.0)
