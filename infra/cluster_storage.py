"""Each cluster's storage: PersistentVolumes on the workers' own disks, provisioned when a claim needs one.

The `local-path` StorageClass (the cluster default) and its provisioner, rancher's local-path-provisioner, as
kubespray deploys it (`local_path_provisioner_enabled`): a claim waits for its pod to be scheduled, then a
short-lived helper pod makes the volume's directory on that pod's worker; deleting the claim deletes the
directory. A volume lives on one worker: a StatefulSet replica stays there, and its data outlives the node only
through backups (the DR tooling), as with any local disk.

What the platform adds: the provisioner runs non-root with a read-only root filesystem and talks only to the
API; the helper pods (root: they make and remove directories on the host) are the one thing the namespace's
`privileged` PodSecurity level admits, and reach no network at all.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes

from infra import config as cfg
from infra import kube
from infra.components import API_PORT, KubernetesCluster, node_address

NAMESPACE = "local-path-storage"
NAME = "local-path-provisioner"
STORAGE_CLASS = "local-path"
PROVISIONER = "rancher.io/local-path"
LABELS = {"app": NAME}
HELPER_LABELS = {"app": "local-path-helper"}
# The image archives every worker imports (cluster_image_dir/<name>.tar): the provisioner alone, and the busybox
# its helper pods run the setup and teardown scripts with.
IMAGE_ARCHIVE = "local-path-provisioner"
HELPER_IMAGE_ARCHIVE = "busybox"
# Where volumes live on every worker (kubespray's default is /opt/local-path-provisioner).
VOLUMES_DIR = "/var/lib/sovcloud/volumes"

SETUP = '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n'
TEARDOWN = '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n'


def helper_pod(image: str) -> dict[str, Any]:
    """The template the provisioner fills in (volumes, node, command) for each directory it makes or removes."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "helper-pod", "labels": HELPER_LABELS},
        "spec": {
            "priorityClassName": "system-node-critical",
            "tolerations": [{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}],
            "automountServiceAccountToken": False,
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "helper-pod", "image": image, "imagePullPolicy": "IfNotPresent",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                              "limits": {"cpu": "100m", "memory": "32Mi"}},
                # Root, to make and remove directories under VOLUMES_DIR; nothing more.
                "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER"]}},
            }],
        },
    }


def manifests(cluster: KubernetesCluster, site: cfg.Site, image: str, helper_image: str) -> dict[str, dict[str, Any]]:
    """The objects, by the resource key they are applied under."""
    control_plane = [node_address(site, n) for n in site.nodes_with(cfg.Role.CONTROL_PLANE)]
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": LABELS}
    rbac = "rbac.authorization.k8s.io/v1"
    account = {"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}
    config = {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [VOLUMES_DIR]}]}
    return {
        "storage-namespace": {
            "apiVersion": "v1", "kind": "Namespace",
            # hostPath volumes (the helper pods') are admitted by `privileged` alone.
            "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}},
        "storage-service-account": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        "storage-role": {"apiVersion": rbac, "kind": "Role", "metadata": meta,
                         "rules": [{"apiGroups": [""], "resources": ["pods"],
                                    "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]}]},
        "storage-role-binding": {"apiVersion": rbac, "kind": "RoleBinding", "metadata": meta,
                                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
                                 "subjects": [account]},
        "storage-cluster-role": {
            "apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": NAME},
            "rules": [{"apiGroups": [""], "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods",
                                                         "pods/log"], "verbs": ["get", "list", "watch"]},
                      {"apiGroups": [""], "resources": ["persistentvolumes"],
                       "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
                      {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
                      {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"],
                       "verbs": ["get", "list", "watch"]}]},
        "storage-cluster-role-binding": {
            "apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [account]},
        "storage-config": {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {**meta, "name": "local-path-config"},
            "data": {"config.json": json.dumps(config, indent=2), "setup": SETUP, "teardown": TEARDOWN,
                     "helperPod.yaml": json.dumps(helper_pod(helper_image), indent=2)}},
        "storage-deployment": {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {
                "replicas": 1,  # upstream runs without leader election: one provisioner per cluster
                "selector": {"matchLabels": LABELS},
                "template": {
                    "metadata": {"labels": LABELS},
                    "spec": {
                        "serviceAccountName": NAME,
                        "priorityClassName": "system-cluster-critical",
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": NAME, "image": image,
                            "command": ["/local-path-provisioner", "start", "--config", "/etc/config/config.json",
                                        "--provisioner-name", PROVISIONER, "--service-account-name", NAME],
                            "env": [{"name": "POD_NAMESPACE",
                                     "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                    {"name": "CONFIG_MOUNT_PATH", "value": "/etc/config/"}],
                            "resources": {"requests": {"cpu": "20m", "memory": "32Mi"},
                                          "limits": {"cpu": "200m", "memory": "96Mi"}},
                            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/config", "readOnly": True}],
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": "local-path-config"}}],
                    },
                },
            },
        },
        "storage-class": {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS,
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER, "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"},
        # Nothing in the namespace has a network but the provisioner, and it only to the API.
        "storage-network-policy": {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": NAMESPACE},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}},
        "storage-api-network-policy": {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
            "spec": {"podSelector": {"matchLabels": LABELS}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": f"{a}/32"}} for a in control_plane],
                                 "ports": [{"protocol": "TCP", "port": API_PORT}]}]}},
    }


def cluster_storage(cluster: KubernetesCluster, site: cfg.Site, images: dict[str, str],
                    provider: kubernetes.Provider,
                    opts: pulumi.ResourceOptions | None = None) -> list[pulumi.CustomResource]:
    """Apply the cluster's storage (once its control plane serves: `opts` depends on it)."""
    objects = manifests(cluster, site, images[IMAGE_ARCHIVE], images[HELPER_IMAGE_ARCHIVE])
    namespace = kube.apply(f"{cluster.config.name}-storage-namespace", objects.pop("storage-namespace"), provider,
                           opts=opts)
    inside = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[namespace]))
    return [namespace, *(kube.apply(f"{cluster.config.name}-{key}", manifest, provider, opts=inside)
                         for key, manifest in objects.items())]
