"""DR fault tests on the lab (bounded; every stopped container is started again in a finally: and the
test waits until the lab is healthy): a control-plane node of dc-astana killed while a namespace restore
runs through the site's API LB, and dc-almaty's S3 down while a backup runs."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from dr import backup, jobs, k8s, restore, s3io
from dr.config import load_config
from lab import cluster, gateway, inventory, s3
from lab.nodes import start_node, wait_booted, wait_ssh
from lab.podman import podman
from tests.conftest import require_tool

pytestmark = [pytest.mark.lab, pytest.mark.tools]


@pytest.fixture(scope="module")
def lab(lab_deployment):
    return lab_deployment["config"]


@pytest.fixture
def dr_cfg(lab, tmp_path):
    """The deployment's DR config (lab S3, keys) with a staging dir of this test's own."""
    cfg = load_config(inventory.state_dir(lab) / "dr" / "dr.json")
    return cfg.model_copy(update={"staging_dir": tmp_path / "staging"})


def running(lab, node: str) -> bool:
    return podman("inspect", "-f", "{{.State.Running}}", lab.container(node)).strip() == "true"


def etcd_healthy(lab, site) -> int:
    """Members of the site's etcd answering `endpoint health` (etcdctl 3.4 prints it on stderr)."""
    p = cluster.site_dir(site, inventory.state_dir(lab)) / "pki"
    eps = ",".join(f"https://{site.ip(n)}:2379" for n in cluster.control_plane(site))
    r = subprocess.run([require_tool("etcdctl"), f"--endpoints={eps}", f"--cacert={p}/etcd-ca.crt",
                        f"--cert={p}/apiserver-etcd-client.crt", f"--key={p}/apiserver-etcd-client.key",
                        "--dial-timeout=3s", "--command-timeout=5s", "endpoint", "health"],
                       capture_output=True, text=True, timeout=30, env={"ETCDCTL_API": "3"})
    return (r.stdout + r.stderr).count("is healthy")


def restart_node(lab, site, node) -> float:
    """Start a stopped node and wait (bounded) until etcd is 3/3 and the LB sends to it again."""
    t0 = time.monotonic()
    start_node(lab.container(node.name))
    wait_ssh(site.ip(node), deadline_s=60)
    assert wait_booted(site.ip(node), deadline_s=60) == "running"
    deadline = t0 + 150
    while time.monotonic() < deadline:
        servers = cluster.lb_servers(site)
        if etcd_healthy(lab, site) == 3 and all(servers.values()):
            return round(time.monotonic() - t0, 1)
        time.sleep(2)
    pytest.fail(f"{node.name} not back within 150s: etcd {etcd_healthy(lab, site)}/3, LB {cluster.lb_servers(site)}")


@pytest.mark.control("SC-BCK-02", "SC-AVL-02")
def test_control_plane_node_killed_during_namespace_restore(lab, dr_cfg, tmp_path):
    """astana-cp2 is stopped after the 10th of ~120 objects is restored; the restore goes on through the LB
    (retrying calls the dying node dropped), the rest is applied and verified with the node down."""
    site, victim = lab.find_node("astana-cp2")
    kc = str(cluster.site_dir(site, inventory.state_dir(lab)) / "kubeconfig" / "admin.conf")
    api = k8s.api_client(kc)
    tag = os.urandom(3).hex()
    source, target = f"dr-fault-{tag}", f"dr-fault-{tag}-restored"
    assert all(running(lab, n.name) for n in cluster.control_plane(site))
    assert etcd_healthy(lab, site) == 3 and all(cluster.lb_servers(site).values())
    k8s.call(api, "/api/v1/namespaces", "POST", body={"metadata": {"name": source}})
    stopper: dict = {}
    try:
        for i in range(120):
            k8s.call(api, f"/api/v1/namespaces/{source}/configmaps", "POST",
                     body={"metadata": {"name": f"cfg-{i:03d}"}, "data": {"i": str(i), "blob": os.urandom(512).hex()}})
        rep = jobs.backup_k8s(dr_cfg, api, source)
        assert rep.good and rep.to_dict()["replicated"], rep.to_dict()
        f = restore.fetch(dr_cfg, site.name, f"k8s-{source}", None, tmp_path / "w")

        def stop() -> None:
            t = time.monotonic()
            podman("stop", "-t", "2", lab.container(victim.name), timeout=60)
            stopper["stop_seconds"] = round(time.monotonic() - t, 1)

        def on_object(i: int) -> None:
            if i == 10:  # the kill starts while requests are in flight ...
                stopper["thread"] = threading.Thread(target=stop)
                stopper["thread"].start()
            if i == 30:  # ... and from here on the node is down for the rest of the restore and the verify
                stopper["thread"].join(60)
                assert not running(lab, victim.name), f"{victim.name} still running 60 s after podman stop"

        t0 = time.monotonic()
        out = restore.restore_k8s(f, api, target, on_object)
        took = time.monotonic() - t0
        assert not running(lab, victim.name), "the node came back before the restore finished"
        assert out["objects"] >= 121 and out["sentinel"] == f.manifest["sentinel"]["value"], out
        print(f"restore of {out['objects']} objects with {victim.name} killed at object 10: {took:.1f}s, "
              f"{out['retries']} retried calls {out.get('errors', [])[:5]}, podman stop {stopper['stop_seconds']}s")
        t_lb = time.monotonic()
        while cluster.lb_servers(site).get(victim.name) and time.monotonic() - t_lb < 30:
            time.sleep(1)
        assert cluster.lb_servers(site)[victim.name] is False  # the LB took the dead node out
        assert etcd_healthy(lab, site) == 2
    finally:
        if "thread" in stopper:
            stopper["thread"].join(60)
        if not running(lab, victim.name):
            print(f"{victim.name} back (etcd 3/3, LB) {restart_node(lab, site, victim)}s after podman start")
        for ns in (source, target):
            k8s.delete_namespace(api, ns)


@pytest.mark.control("SC-BCK-01", "SC-DATA-01")
def test_almaty_s3_down_during_backup(lab, dr_cfg, tmp_path):
    """The backup lands verified at dc-astana and stays staged; after the restart (the lab's S3 keeps its
    data in tmpfs: it comes back empty) `dr sync` pushes the staged copy and re-seeds every backup and drill
    result dc-almaty held before, each verified there: nothing is lost."""
    site = lab.site("dc-almaty")
    store = dr_cfg.site("dc-almaty")
    before = set(s3io.list_keys(s3io.client(store), store.bucket, ""))
    assert any(k.endswith("/manifest.json") for k in before), "dc-almaty holds no backup to lose"
    kc = str(cluster.site_dir("dc-astana", inventory.state_dir(lab)) / "kubeconfig" / "admin.conf")
    api = k8s.api_client(kc)
    podman("stop", "-t", "2", lab.container(f"{site.name}-s3"), timeout=60)
    try:
        t0 = time.monotonic()
        rep = jobs.backup_k8s(dr_cfg, api, "egov-prod")
        took = time.monotonic() - t0
        d = rep.to_dict()
        assert d["good"] is True and d["verified_sites"] == ["dc-astana"], d
        assert d["sites"]["dc-almaty"]["status"] == "failed"
        assert f"S3 at {store.endpoint}" in d["sites"]["dc-almaty"]["error"]
        assert len(backup.pending(dr_cfg)) == 1  # kept for the catch-up
        f = restore.fetch(dr_cfg, "dc-astana", "k8s-egov-prod", None, tmp_path / "w1")
        assert f.site == "dc-astana" and f.manifest["sentinel"]["value"]
        print(f"backup with dc-almaty's S3 down: {took:.1f}s, verified at {d['verified_sites']}")
    finally:
        t1 = time.monotonic()
        podman("start", lab.container(f"{site.name}-s3"), timeout=60)
        s3.wait_s3(site)
        gateway.route_appliances(lab)  # the appliance's route to the other site died with its netns
        s3.ensure_bucket(site)
    reps = backup.sync(dr_cfg)
    assert [r.verified_sites for r in reps] == [["dc-astana", "dc-almaty"]] and backup.pending(dr_cfg) == []
    copies = backup.catch_up(dr_cfg)
    assert not any(c["failed"] for c in copies), copies
    after = set(s3io.list_keys(s3io.client(store), store.bucket, ""))
    assert before <= after, f"lost at dc-almaty: {sorted(before - after)}"
    print(f"dc-almaty caught up {time.monotonic() - t1:.1f}s after restart: staged copy pushed, "
          f"{sum(len(c['copied']) for c in copies)} backups and {sum(c['drills_copied'] for c in copies)} "
          "drill results re-seeded")
    g = restore.fetch(dr_cfg, "dc-astana", "k8s-egov-prod", f.manifest["timestamp"], tmp_path / "w2",
                      sites=["dc-almaty"])
    assert g.site == "dc-almaty" and g.manifest["sentinel"] == f.manifest["sentinel"]
