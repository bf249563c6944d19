"""The clusters' storage as the stack declares it (infra/cluster_storage.py): the default StorageClass, its
provisioner's rights and reach, the helper pods' confinement. That a claim binds and its data lands on the pod's
worker in a running cluster is tests/charts/test_storage.py's."""

from __future__ import annotations

import json

import pulumi
import yaml

from infra import cluster_storage
from infra.program import build
from tests.infra.test_components import _hosts


@pulumi.runtime.test
def test_default_storage_class_provisioned_by_a_confined_provisioner(lab_cloud, checks, tmp_path):
    res = build(lab_cloud, hosts=_hosts(tmp_path))
    objects = [o for o in res["rbac"]["astana"] if o._name.startswith("astana-storage-")]

    @checks.on(*(o.manifest for o in objects))
    def _(*manifests):
        by_kind = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
        sc = by_kind["StorageClass", "local-path"]
        # The cluster default; a claim binds where its pod is scheduled, and goes with it.
        assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
        assert (sc["provisioner"], sc["volumeBindingMode"], sc["reclaimPolicy"]) == (
            cluster_storage.PROVISIONER, "WaitForFirstConsumer", "Delete")
        ns = by_kind["Namespace", cluster_storage.NAMESPACE]["metadata"]["labels"]
        assert ns["pod-security.kubernetes.io/enforce"] == "privileged"  # hostPath: the helper pods'
        deployment = by_kind["Deployment", cluster_storage.NAME]["spec"]["template"]["spec"]
        container = deployment["containers"][0]
        assert deployment["securityContext"]["runAsNonRoot"] and deployment["securityContext"]["seccompProfile"]
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                 "capabilities": {"drop": ["ALL"]}}
        assert container["image"].startswith("sovcloud.local/local-path-provisioner:test@sha256:")
        assert container["resources"]["limits"]["memory"]
        assert "--provisioner-name" in container["command"]
        assert container["command"][container["command"].index("--provisioner-name") + 1] == sc["provisioner"]
        config = by_kind["ConfigMap", "local-path-config"]["data"]
        assert json.loads(config["config.json"])["nodePathMap"][0]["paths"] == [cluster_storage.VOLUMES_DIR]
        helper = yaml.safe_load(config["helperPod.yaml"])["spec"]
        assert helper["containers"][0]["image"].startswith("sovcloud.local/busybox:test@sha256:")
        assert helper["containers"][0]["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert helper["automountServiceAccountToken"] is False
        # Its rights: PersistentVolumes cluster-wide, pods only in its own namespace (the helpers).
        cluster_rules = by_kind["ClusterRole", cluster_storage.NAME]["rules"]
        writes = {r for rule in cluster_rules if "create" in rule["verbs"] for r in rule["resources"]}
        assert writes == {"persistentvolumes", "events"}
        assert by_kind["Role", cluster_storage.NAME]["metadata"]["namespace"] == cluster_storage.NAMESPACE
        # Its reach: nothing in the namespace has a network, but the provisioner to the API endpoints.
        deny = by_kind["NetworkPolicy", "default-deny"]["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        egress = by_kind["NetworkPolicy", cluster_storage.NAME]["spec"]["egress"]
        assert {(peer["ipBlock"]["cidr"], port["port"]) for rule in egress for peer in rule["to"]
                for port in rule["ports"]} == {("10.210.1.10/32", 6443), ("10.210.1.11/32", 6443),
                                               ("10.210.1.12/32", 6443)}
