"""Volume data in namespace backups (dr/hooks.py): which pods declare a dump, what a bad declaration is told,
which claims no backup holds, and a restored claim that can bind. The dump and load themselves run on the lab
(tests/charts/test_visits.py)."""

from __future__ import annotations

import json

import pytest

from dr import hooks, k8s


def pod(name: str, annotations: dict | None = None, claims: tuple[str, ...] = (), ready: bool = True,
        labels: dict | None = None) -> dict:
    return {"metadata": {"name": name, "annotations": annotations or {},
                         "labels": labels or {"app": "db", "controller-revision-hash": "db-7f9c"}},
            "spec": {"containers": [{"name": "db"}, {"name": "sidecar"}],
                     "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


DECLARED = {hooks.DUMP: json.dumps(["pg_dump", "db"]), hooks.LOAD: json.dumps(["psql", "db"])}


@pytest.fixture
def pods(monkeypatch):
    """The namespace's pods as the API server would list them."""
    listed: list[dict] = []
    monkeypatch.setattr(k8s, "call", lambda api, path, **kw: {"items": listed})
    return listed


def test_a_declared_pod_is_dumped_in_its_first_container_and_found_again_by_its_stable_labels(pods):
    pods += [pod("db-0", DECLARED, ("data-db-0",)), pod("web-1")]
    (hook,), unhooked = hooks.scan(None, "ns")
    assert (hook.pod, hook.container, hook.dump, hook.load) == ("db-0", "db", ["pg_dump", "db"], ["psql", "db"])
    assert hook.labels == {"app": "db"}  # the revision hash differs on the restored controller's pod
    assert hook.part == "dump-db-0"
    assert unhooked == []


def test_a_claim_mounted_by_a_pod_without_a_dump_is_reported_as_not_backed_up(pods):
    pods += [pod("db-0", DECLARED, ("data-db-0",)), pod("cache-0", claims=("data-cache-0",))]
    assert hooks.scan(None, "ns")[1] == ["cache-0: data-cache-0"]


@pytest.mark.parametrize(("annotations", "error"), [
    ({hooks.DUMP: json.dumps(["pg_dump"])}, f"annotation {hooks.LOAD} missing"),
    ({**DECLARED, hooks.LOAD: "psql db"}, "must be a JSON list of strings"),
    ({**DECLARED, hooks.DUMP: "[]"}, "must be a JSON list of strings"),
    ({**DECLARED, hooks.CONTAINER: "postgres"}, "is none of its containers"),
])
def test_a_bad_declaration_names_the_pod_and_the_annotation(pods, annotations, error):
    pods.append(pod("db-0", annotations))
    with pytest.raises(hooks.HookError, match=error) as err:
        hooks.scan(None, "ns")
    assert "pod db-0" in str(err.value)


def test_a_declared_pod_that_is_not_ready_fails_the_backup_instead_of_leaving_its_data_out(pods):
    pods.append(pod("db-0", DECLARED, ready=False))
    with pytest.raises(hooks.HookError, match="not ready"):
        hooks.scan(None, "ns")
    pods[0] = pod("db-0", DECLARED)  # the same pod once ready is backed up
    assert [h.pod for h in hooks.scan(None, "ns")[0]] == ["db-0"]


def test_the_named_container_runs_the_commands(pods):
    pods.append(pod("db-0", {**DECLARED, hooks.CONTAINER: "sidecar"}))
    assert hooks.scan(None, "ns")[0][0].container == "sidecar"


def test_a_restored_claim_asks_for_a_fresh_volume():
    """The original volume stays bound to the original claim; the restored one must not name it (it would pend
    forever) nor the node the original was provisioned on."""
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "data-db-0", "namespace": "egov-prod", "labels": {"app": "db"},
                          "annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                          "volume.kubernetes.io/selected-node": "astana-w1",
                                          "volume.beta.kubernetes.io/storage-provisioner": "rancher.io/local-path",
                                          "team": "db"}},
             "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pvc-1234", "storageClassName": "local-path",
                      "resources": {"requests": {"storage": "256Mi"}}}}
    out = k8s._retarget(claim, "persistentvolumeclaims", "egov-prod", "egov-prod-restored")
    assert out["metadata"]["namespace"] == "egov-prod-restored"
    assert out["metadata"]["annotations"] == {"team": "db"}
    assert "volumeName" not in out["spec"] and out["spec"]["storageClassName"] == "local-path"
    assert claim["spec"]["volumeName"] == "pvc-1234"  # the backed-up object itself is left as it was


@pytest.mark.parametrize(("redump", "ok"), [(b"row 1\nrow 2\n", True), (b"row 1\n", False)])
def test_a_restore_is_good_only_when_the_restored_pod_dumps_what_was_backed_up(monkeypatch, tmp_path, redump, ok):
    """The load is checked by dumping again: the same bytes pass, anything else (a row missing) is refused."""
    ran: list[tuple[list[str], bytes | None]] = []

    def fake_exec(api, namespace, pod, container, argv, stdin, stdout, timeout_s):
        ran.append((argv, stdin.read() if stdin else None))
        if stdout is not None:
            stdout.write(redump)

    monkeypatch.setattr(hooks, "_exec", fake_exec)
    monkeypatch.setattr(hooks, "replacement", lambda api, ns, labels, deadline_s: pod("db-0", DECLARED))
    (dump := tmp_path / "dump").write_bytes(b"row 1\nrow 2\n")
    with open(dump, "rb") as src:
        if ok:
            assert hooks.load_and_check(None, "restored", {"app": "db"}, src, 1)["bytes"] == 12
        else:
            with pytest.raises(hooks.HookError, match="its dump differs from the one backed up"):
                hooks.load_and_check(None, "restored", {"app": "db"}, src, 1)
    assert ran == [(["psql", "db"], b"row 1\nrow 2\n"), (["pg_dump", "db"], None)]  # load, then dump again
