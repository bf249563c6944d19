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
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import tenacity
import urllib3
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


SENTINEL_CONFIGMAP = "sovcloud-dr-sentinel"
FIELD_MANAGER = "sovcloud-dr"
# Answers that mean "this API server (or the LB in front of it) cannot answer now", not "no": status 0
# is a connection the client lost; the rest are what an apiserver going down or overloaded returns.
TRANSIENT_STATUS = {0, 429, 500, 502, 503, 504}
RETRY_SECONDS = 90  # per call: longer than an LB needs to take a dead control-plane node out
REQUEST_TIMEOUT = (5, 30)  # connect, read: a request to a node that died mid-way must not hang


# What the volume controllers wrote on a claim when they bound and provisioned it.
CLAIM_BINDING_ANNOTATIONS = ("pv.kubernetes.io/", "volume.kubernetes.io/", "volume.beta.kubernetes.io/")


class K8sRestoreError(Exception):
    pass


def _transient(err: Exception) -> bool:
    if isinstance(err, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return True
    return getattr(err, "status", None) in TRANSIENT_STATUS


def call(api, path: str, method: str = "GET", body=None, query: list | None = None, headers: dict | None = None,
         stats: dict | None = None, deadline_s: float = RETRY_SECONDS):
    """One API call, retried with backoff while the failure is transient (a control-plane node dying
    behind the LB); every other error is raised at once. Only idempotent calls go through here."""
    def count(state: tenacity.RetryCallState) -> None:
        if stats is not None:
            err = state.outcome.exception()
            stats["retries"] = stats.get("retries", 0) + 1
            stats.setdefault("errors", []).append(f"{method} {path}: {type(err).__name__} "
                                                  f"{getattr(err, 'status', '')}".strip())

    retrying = tenacity.Retrying(retry=tenacity.retry_if_exception(_transient),
                                 wait=tenacity.wait_exponential(multiplier=0.2, max=3),
                                 stop=tenacity.stop_before_delay(deadline_s), before_sleep=count, reraise=True)
    return retrying(api.call_api, path, method, query_params=query or [], header_params=headers or {}, body=body,
                    response_types_map={200: "object", 201: "object"}, auth_settings=["BearerToken"],
                    _return_http_data_only=True, _request_timeout=REQUEST_TIMEOUT)


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
    _drop_annotations(meta, ("kubectl.kubernetes.io/last-applied-configuration",))
    obj["metadata"] = meta
    return obj


def _drop_annotations(meta: dict, prefixes: tuple[str, ...]) -> None:
    """Remove the annotations starting with any of `prefixes` from `meta` (and the field, if none are left)."""
    kept = {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith(prefixes)}
    if kept:
        meta["annotations"] = kept
    else:
        meta.pop("annotations", None)


def _owned_by_controller(obj: dict) -> bool:
    return any(o.get("controller") for o in (obj.get("metadata") or {}).get("ownerReferences") or [])


def export_namespace(api, namespace: str) -> dict[str, dict]:
    """path-in-archive -> cleaned object for every exported object of `namespace`, and the namespace
    itself (its labels carry the PodSecurity level and the data classification)."""
    objects: dict[str, dict] = {
        f"{namespace}/core/namespaces/{namespace}.yaml": clean(_get(api, f"/api/v1/namespaces/{namespace}"),
                                                               "Namespace", "v1")
    }
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


def tar_to_objects(path: Path) -> dict[str, dict]:
    with tarfile.open(path) as tar:
        return {m.name: yaml.safe_load(tar.extractfile(m)) for m in tar.getmembers() if m.isfile()}


def _url(api_version: str, resource: str, namespace: str | None, name: str) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{base}/namespaces/{namespace}/{resource}/{name}" if namespace else f"{base}/{resource}/{name}"


def _retarget(obj: dict, resource: str, source: str, target: str) -> dict:
    """The object as it goes into the fresh namespace."""
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": target}}
    # Owners are named by uid, and the restored owners get new uids: the garbage collector would delete
    # every restored dependent whose recorded owner does not exist.
    obj["metadata"].pop("ownerReferences", None)
    if resource == "rolebindings":
        obj["subjects"] = [{**s, "namespace": target} if s.get("namespace") == source else s
                           for s in obj.get("subjects") or []]
    if resource == "persistentvolumeclaims":
        # A fresh claim: the original's volume stays bound to the original claim (a claim naming it would pend
        # forever), and the node the original was provisioned on may not exist where this restore runs.
        obj["spec"] = {k: v for k, v in obj.get("spec", {}).items() if k != "volumeName"}
        _drop_annotations(obj["metadata"], CLAIM_BINDING_ANNOTATIONS)  # the retargeted object's own metadata
    if resource == "services":
        # Cluster IPs are allocated per Service; the original still holds its own.
        obj["spec"] = {k: v for k, v in obj.get("spec", {}).items() if k not in ("clusterIP", "clusterIPs")}
    return obj


# Policy objects first, so what follows is admitted under the namespace's own limits.
_FIRST = ("limitranges", "resourcequotas", "serviceaccounts")


def _order(path: str) -> tuple:
    resource = path.split("/")[2]
    return (_FIRST.index(resource) if resource in _FIRST else len(_FIRST), path)


def _apply(api, obj: dict, resource: str, stats: dict) -> None:
    meta = obj["metadata"]
    call(api, _url(obj["apiVersion"], resource, meta.get("namespace"), meta["name"]), "PATCH", body=obj,
         query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
         headers={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"}, stats=stats)


def restore_namespace(api, objects: dict[str, dict], source: str, target: str, restored_from: str,
                      on_object: Callable[[int], None] | None = None) -> dict:
    """Re-create a namespace export in a fresh namespace `target` (server-side apply: a retried call
    after a lost answer is harmless), then check every object is there with the backed-up data."""
    stats: dict = {"retries": 0}
    try:
        call(api, f"/api/v1/namespaces/{target}", stats=stats)
        raise K8sRestoreError(f"namespace {target} exists: restore only into a fresh namespace")
    except K8sRestoreError:
        raise
    except Exception as err:
        if getattr(err, "status", None) != 404:
            raise
    ns = objects.get(f"{source}/core/namespaces/{source}.yaml") or {"apiVersion": "v1", "kind": "Namespace"}
    meta = ns.get("metadata", {})
    labels = {**meta.get("labels", {}), "kubernetes.io/metadata.name": target}
    annotations = {**meta.get("annotations", {}), "sovcloud.gov.kz/restored-from": restored_from}
    _apply(api, {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": target, "labels": labels, "annotations": annotations}}, "namespaces", stats)
    todo = sorted((p for p in objects if p.split("/")[2] != "namespaces"), key=_order)
    for i, path in enumerate(todo, 1):
        _apply(api, _retarget(objects[path], path.split("/")[2], source, target), path.split("/")[2], stats)
        if on_object:
            on_object(i)
    verify_namespace(api, {p: objects[p] for p in todo}, target, stats)
    return {"namespace": target, "objects": len(todo), **stats}


def verify_namespace(api, objects: dict[str, dict], target: str, stats: dict | None = None) -> None:
    """Every backed-up object exists in `target`; ConfigMaps and Secrets carry exactly the backed-up data."""
    missing, differ = [], []
    for path, obj in objects.items():
        resource = path.split("/")[2]
        try:
            got = call(api, _url(obj["apiVersion"], resource, target, obj["metadata"]["name"]), stats=stats)
        except Exception as err:
            if getattr(err, "status", None) != 404:
                raise
            missing.append(path)
            continue
        if resource in ("configmaps", "secrets") and any(
            (got.get(k) or {}) != (obj.get(k) or {}) for k in ("data", "binaryData")
        ):
            differ.append(path)
    if missing or differ:
        raise K8sRestoreError(f"namespace {target} after restore: missing {missing}, data differs {differ}")


def write_sentinel(api, namespace: str, value: str) -> None:
    """The ConfigMap a restore must bring back with exactly this value (written just before a backup)."""
    _apply(api, {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": SENTINEL_CONFIGMAP, "namespace": namespace,
                              "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER}},
                 "data": {"value": value}}, "configmaps", {})


def read_sentinel(api, namespace: str) -> str | None:
    try:
        cm = call(api, f"/api/v1/namespaces/{namespace}/configmaps/{SENTINEL_CONFIGMAP}")
    except Exception as err:
        if getattr(err, "status", None) == 404:
            return None
        raise
    return (cm.get("data") or {}).get("value")


def delete_namespace(api, name: str) -> None:
    """Delete (asynchronously) if present; for drill namespaces."""
    try:
        call(api, f"/api/v1/namespaces/{name}", "DELETE")
    except Exception as err:
        if getattr(err, "status", None) != 404:
            raise
