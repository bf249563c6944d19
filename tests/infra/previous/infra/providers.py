"""infra/providers.py as the version before the typed Kubernetes resources had it (commit 9aef273), cut to the
two resources tests/infra/test_migration.py deploys with it: a key (a dynamic resource of the one unnamed type)
and a KubeObject (an in-cluster object applied by this module's own dynamic provider). Frozen: it is what
stacks deployed by that version hold in their state, by these module paths."""

from __future__ import annotations

import base64
import os
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

_SECRET_OUTS = ["key_pem", "private_key", "private_key_pem", "value"]


class _ReplaceOnChange(ResourceProvider):
    """Any input change replaces the resource: keys and certificates are immutable."""

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in set(olds) | set(news)
                   if k not in ("__provider",) and k in news and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)


class SecretKeyProvider(_ReplaceOnChange):
    def create(self, props: dict[str, Any]) -> CreateResult:
        value = base64.b64encode(os.urandom(int(props["bytes"]))).decode()
        return CreateResult(id_=f"key-{os.urandom(4).hex()}", outs={**props, "value": value})


class SecretKey(Resource):
    """Random key material, e.g. the AES key of the kube-apiserver encryption provider."""

    value: pulumi.Output[str]

    def __init__(self, name: str, purpose: str, nbytes: int = 32, opts: pulumi.ResourceOptions | None = None):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_SECRET_OUTS))
        super().__init__(SecretKeyProvider(), name, {"purpose": purpose, "bytes": nbytes, "value": None}, opts)


class KubeObjectProvider(ResourceProvider):
    """Server-side apply of one Kubernetes object (field manager `sovcloud`)."""

    def _api(self, kubeconfig: str, manifest: dict[str, Any]):
        import yaml
        from kubernetes import config, dynamic

        client = config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
        return dynamic.DynamicClient(client).resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])

    def _apply(self, props: dict[str, Any], retry_s: float = 90) -> dict[str, Any]:
        import time

        import urllib3
        from kubernetes.client.exceptions import ApiException

        manifest = props["manifest"]
        meta = manifest["metadata"]
        deadline = time.monotonic() + retry_s
        while True:
            # A control plane the same `pulumi up` just started may refuse or answer 5xx for a few seconds
            # until its load balancer sees a ready apiserver; anything else is an error at once.
            try:
                obj = self._api(props["kubeconfig"], manifest).server_side_apply(
                    body=manifest, name=meta["name"], namespace=meta.get("namespace"),
                    field_manager="sovcloud", force_conflicts=True)
                return {**props, "uid": obj.metadata.uid}
            except (urllib3.exceptions.HTTPError, ApiException) as exc:
                transient = not isinstance(exc, ApiException) or exc.status >= 500
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(3)

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._apply(props)
        meta = props["manifest"]["metadata"]
        return CreateResult(id_=f"{props['manifest']['kind']}/{meta.get('namespace', '')}/{meta['name']}",
                            outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        old_m, new_m = olds.get("manifest", {}), news.get("manifest", {})
        identity = ("apiVersion", "kind")
        replaces = [k for k in identity if old_m.get(k) != new_m.get(k)]
        if old_m.get("metadata", {}).get("name") != new_m.get("metadata", {}).get("name"):
            replaces.append("metadata.name")
        changed = old_m != new_m or olds.get("kubeconfig") != news.get("kubeconfig")
        return DiffResult(changes=changed, replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]):
        from pulumi.dynamic import UpdateResult

        return UpdateResult(outs=self._apply(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        manifest = props["manifest"]
        meta = manifest["metadata"]
        try:
            self._api(props["kubeconfig"], manifest).delete(name=meta["name"], namespace=meta.get("namespace"))
        except ApiException as exc:
            if exc.status != 404:
                raise


class KubeObject(Resource):
    uid: pulumi.Output[str]

    def __init__(self, name: str, kubeconfig: pulumi.Input[str], manifest: dict[str, Any],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(KubeObjectProvider(), name,
                         {"kubeconfig": pulumi.Output.secret(kubeconfig), "manifest": manifest, "uid": None},
                         opts)
