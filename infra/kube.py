"""Kubernetes objects on the stack's clusters, through the pulumi-kubernetes provider plugin `make setup` builds.

Each cluster gets one explicit Provider from its kubeconfig (server-side apply); each object is the typed
resource of its kind (`kubernetes:apps/v1:Deployment`, `kubernetes:rbac.authorization.k8s.io/v1:ClusterRole`,
...), so a preview, `pulumi stack --show-urns` and the policy pack see what it is. The platform still writes
its objects as plain manifests, as upstream documents them: `apply` turns one into its typed resource, and the
resource keeps the manifest it was declared from (`.manifest`, for the component tests).

When a cluster cannot be reached (a `pulumi preview` of the production stack on a laptop), the provider
previews its objects as they would be created, silently; `warn_if_unreachable` says which cluster and why.
"""

from __future__ import annotations

import re
import socket
import urllib.parse
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes
import yaml


def provider(cluster: str, kubeconfig: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None
             ) -> kubernetes.Provider:
    """The provider of one cluster: its kubeconfig, server-side apply (objects an operator or an earlier
    version of this stack created are adopted, not refused), and never the machine's default kubeconfig."""
    return kubernetes.Provider(f"{cluster}-kubernetes", kubeconfig=kubeconfig, enable_server_side_apply=True,
                               opts=opts)


def resource_class(api_version: str, kind: str) -> type[pulumi.CustomResource]:
    """The SDK's class of a kind: `apps/v1` Deployment -> kubernetes.apps.v1.Deployment; the core group ("v1")
    is `core`, a dotted group its first label (`rbac.authorization.k8s.io/v1` -> `rbac.v1`)."""
    group, _, version = api_version.rpartition("/")
    module = group.split(".")[0] or "core"
    try:
        return getattr(getattr(getattr(kubernetes, module), version), kind)
    except AttributeError:
        raise ValueError(f"{api_version} {kind}: pulumi-kubernetes has no typed resource for this kind") from None


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


# The stack is the authority for the objects it declares: its apply wins a conflict with another field manager
# (as `kubectl apply --server-side --force-conflicts`), e.g. with the manager of the stack's previous version,
# whose apply the server completed with defaults (a fieldRef's apiVersion, an admission policy's matchPolicy).
FORCE = {"pulumi.com/patchForce": "true"}


def apply(name: str, manifest: dict[str, Any], provider: kubernetes.Provider,
          opts: pulumi.ResourceOptions | None = None) -> pulumi.CustomResource:
    """The typed resource of `manifest` on the cluster of `provider`. Top-level fields become the constructor's
    arguments (roleRef -> role_ref); nested fields go through as written (the provider takes the API's names)."""
    cls = resource_class(manifest["apiVersion"], manifest["kind"])
    meta = manifest["metadata"]
    fields = {_snake(k): v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    fields["metadata"] = {**meta, "annotations": {**meta.get("annotations", {}), **FORCE}}
    resource = cls(name, **fields, opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(provider=provider)))
    resource.manifest = pulumi.Output.from_input(manifest)
    return resource


def unreachable(kubeconfig: str, timeout_s: float = 3) -> str | None:
    """Why the API server of a kubeconfig's current context cannot be reached (a TCP connect), or None."""
    config = yaml.safe_load(kubeconfig)
    context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
    server = next(c["cluster"]["server"] for c in config["clusters"] if c["name"] == context["cluster"])
    url = urllib.parse.urlsplit(server)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
    except OSError as err:
        return f"{server} is unreachable ({err.strerror or err})"
    return None


def warn_if_unreachable(cluster: str, kubeconfig: pulumi.Input[str]) -> None:
    """In a preview, say which cluster could not be reached: its objects are previewed as if new (the provider
    cannot read them), and `pulumi up` needs the cluster."""
    if pulumi.runtime.is_dry_run():
        pulumi.Output.from_input(kubeconfig).apply(lambda text: (why := unreachable(text)) and pulumi.log.warn(
            f"cluster {cluster}: {why}; its in-cluster objects are previewed as if they were new, and `pulumi up` "
            "needs the cluster"))
