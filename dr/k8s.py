"""Export of a tenant namespace's Kubernetes objects (Velero-style: discover, list, strip, tar).

Every namespaced resource the API server serves that can be listed is exported, so CRDs are not
missed; status and server-managed metadata are stripped so the objects re-apply into a fresh
namespace. Derived objects (events, endpoints, leases, pods owned by controllers) are skipped:
restoring them would fight the controllers that recreate them.
"""

from __future__ import annotations

import io
import tarfile
import time
from typing import BinaryIO

import yaml

# group/resource pairs that are derived or ephemeral; "" is the core group.
SKIP = {
    ("", "events"),
    ("events.k8s.io", "events"),
    ("", "endpoints"),
    ("discovery.k8s.io", "endpointslices"),
    ("coordination.k8s.io", "leases"),
    ("authorization.k8s.io", "localsubjectaccessreviews"),
    ("metrics.k8s.io", "pods"),
}
STRIP_META = (
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def _get(api, path: str) -> dict:
    # kubernetes>=33 takes a map of status -> type (older releases took `response_type`).
    return api.call_api(path, "GET", response_types_map={200: "object"}, auth_settings=["BearerToken"],
                        _return_http_data_only=True)


def discover(api) -> list[tuple[str, str, str]]:
    """(group, version, resource) of every listable namespaced resource, preferred version per group."""
    out: list[tuple[str, str, str]] = []
    core = _get(api, "/api/v1")
    paths = [("", "v1", core)]
    for g in _get(api, "/apis").get("groups", []):
        gv = g.get("preferredVersion") or g["versions"][0]
        paths.append((g["name"], gv["version"], _get(api, f"/apis/{gv['groupVersion']}")))
    for group, version, rl in paths:
        for r in rl.get("resources", []):
            if "/" in r["name"] or not r.get("namespaced") or "list" not in r.get("verbs", []):
                continue
            if (group, r["name"]) in SKIP:
                continue
            out.append((group, version, r["name"]))
    return out


def clean(obj: dict, kind: str, api_version: str) -> dict:
    """The object as it should be re-applied: no status, no server-managed metadata."""
    obj = {k: v for k, v in obj.items() if k != "status"}
    obj.setdefault("kind", kind)
    obj.setdefault("apiVersion", api_version)
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in STRIP_META}
    ann = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    obj["metadata"] = meta
    return obj


def _owned_by_controller(obj: dict) -> bool:
    return any(o.get("controller") for o in (obj.get("metadata") or {}).get("ownerReferences") or [])


def export_namespace(api, namespace: str) -> dict[str, dict]:
    """path-in-archive -> cleaned object for every exported object of `namespace`."""
    objects: dict[str, dict] = {}
    for group, version, resource in discover(api):
        gv = f"{group}/{version}" if group else version
        base = f"/apis/{gv}" if group else "/api/v1"
        lst = _get(api, f"{base}/namespaces/{namespace}/{resource}")
        kind = (lst.get("kind") or "").removesuffix("List")
        for item in lst.get("items", []):
            # Controller-owned objects (ReplicaSets, Pods, Jobs' pods) come back from their owners.
            if _owned_by_controller(item):
                continue
            # The token controller recreates these per namespace; restoring them would clash.
            if resource == "configmaps" and item["metadata"]["name"] == "kube-root-ca.crt":
                continue
            if resource == "serviceaccounts" and item["metadata"]["name"] == "default":
                continue
            name = item["metadata"]["name"]
            objects[f"{namespace}/{group or 'core'}/{resource}/{name}.yaml"] = clean(item, kind, gv)
    return objects


def objects_to_tar(objects: dict[str, dict], dst: BinaryIO) -> None:
    with tarfile.open(fileobj=dst, mode="w|") as tar:
        for path in sorted(objects):
            data = yaml.safe_dump(objects[path], sort_keys=True).encode()
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))


def api_client(kubeconfig: str | None = None):
    from kubernetes import config as kcfg  # imported lazily: only k8s exports need it

    return kcfg.new_client_from_config(config_file=kubeconfig)
