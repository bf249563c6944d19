"""infra/kube.py: plain manifests become the typed pulumi-kubernetes resources of their kinds, on their cluster's
provider; a preview says which cluster it could not reach."""

from __future__ import annotations

import socket

import pulumi
import pulumi_kubernetes as kubernetes
import pytest
import yaml

from infra import kube


def test_each_kind_maps_to_its_typed_resource_and_an_unknown_kind_is_named():
    assert kube.resource_class("v1", "Namespace") is kubernetes.core.v1.Namespace
    assert kube.resource_class("apps/v1", "Deployment") is kubernetes.apps.v1.Deployment
    assert kube.resource_class("rbac.authorization.k8s.io/v1", "ClusterRole") is kubernetes.rbac.v1.ClusterRole
    assert (kube.resource_class("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy")
            is kubernetes.admissionregistration.v1.ValidatingAdmissionPolicy)
    with pytest.raises(ValueError, match=r"example.com/v1 Widget: pulumi-kubernetes has no typed resource"):
        kube.resource_class("example.com/v1", "Widget")


@pulumi.runtime.test
def test_a_manifest_is_declared_as_its_typed_resource_with_the_apis_field_names(pulumi_mocks, checks):
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "sovcloud:backup"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "sovcloud:backup"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "sovcloud:backup"}]}
    resource = kube.apply("astana-backup-binding", binding, kube.provider("astana", "kubeconfig"))
    assert isinstance(resource, kubernetes.rbac.v1.ClusterRoleBinding)

    @checks.on(resource.manifest, resource.id)
    def _(manifest, _id):
        assert manifest == binding
        declared = pulumi_mocks.resources["astana-backup-binding"]
        assert declared.typ == "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
        assert "::astana-kubernetes::" in declared.provider
        assert {k: declared.inputs[k] for k in ("apiVersion", "kind", "roleRef", "subjects")} == {
            k: v for k, v in binding.items() if k != "metadata"}
        # Its own apply wins a conflict with another field manager.
        assert declared.inputs["metadata"] == {"name": "sovcloud:backup", "annotations": kube.FORCE}


def _kubeconfig(port: int) -> str:
    return yaml.safe_dump({"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k"}}],
                           "clusters": [{"name": "k", "cluster": {"server": f"https://127.0.0.1:{port}"}}]})


def test_an_unreachable_api_server_is_named_and_a_listening_one_is_not():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert kube.unreachable(_kubeconfig(port)) is None  # the positive control: the same probe connects
    why = kube.unreachable(_kubeconfig(port))  # the port closed with its socket
    assert why is not None and why.startswith(f"https://127.0.0.1:{port} is unreachable (")
