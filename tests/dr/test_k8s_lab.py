"""Namespace export against the lab's real API server (needs `make lab` with the cluster up)."""

from __future__ import annotations

import os
import tarfile

import pytest
import yaml

from dr import jobs, k8s, restore

pytestmark = [pytest.mark.lab, pytest.mark.tools, pytest.mark.control("SC-BCK-01", "SC-DATA-02")]


@pytest.fixture(scope="module")
def api():
    from lab import cluster

    kc = cluster.site_dir("dc-astana") / "kubeconfig" / "admin.conf"
    if not kc.is_file():
        pytest.fail(f"{kc} missing: bring the lab cluster up (`make lab`) before the lab tests")
    return k8s.api_client(str(kc))


def test_namespace_backup_restores_objects(api, cfg, tmp_path):
    from kubernetes import client

    ns = f"dr-export-{os.urandom(3).hex()}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="app-config"), data={"mode": "sovereign"})
        )
        rep = jobs.backup_k8s(cfg, api, ns)
        assert rep.good and rep.to_dict()["replicated"], rep.to_dict()
        f = restore.fetch(cfg, "dc-astana", f"k8s-{ns}", None, tmp_path / "w")
        with tarfile.open(f.files["data"]) as tar:
            cm = yaml.safe_load(tar.extractfile(f"{ns}/core/configmaps/app-config.yaml"))
        assert cm["data"] == {"mode": "sovereign"} and "managedFields" not in cm["metadata"]
        assert "resourceVersion" not in cm["metadata"]
    finally:
        core.delete_namespace(ns)
