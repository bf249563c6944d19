"""Pulumi dynamic providers for what has no provider plugin here.

The pulumi-tls/random/kubernetes provider plugins cannot be built from the Go module proxy this project
is restricted to, so keys, certificates and in-cluster objects are dynamic resources. Private material is
always returned as a Pulumi secret (encrypted in state, masked in logs).
"""

from __future__ import annotations

import base64
import os
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, Resource, ResourceProvider

_SECRET_OUTS = ["key_pem", "private_key", "value"]


class _ReplaceOnChange(ResourceProvider):
    """Any input change replaces the resource: keys and certificates are immutable."""

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in set(olds) | set(news)
                   if k not in ("__provider",) and k in news and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)


class CertificateProvider(_ReplaceOnChange):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        if news.get("kind") not in ("root", "intermediate", "leaf"):
            failures.append(CheckFailure("kind", "must be root, intermediate or leaf"))
        if news.get("kind") != "root" and not news.get("issuer_cert_pem"):
            failures.append(CheckFailure("issuer_cert_pem", "an intermediate or leaf needs an issuer"))
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        from infra import pki

        kind, cn = props["kind"], props["common_name"]
        if kind == "root":
            pair = pki.create_root_ca(cn, days=int(props["validity_days"]))
        else:
            issuer = pki.KeyPair(props["issuer_cert_pem"], props["issuer_key_pem"])
            if kind == "intermediate":
                pair = pki.create_intermediate_ca(issuer, cn, days=int(props["validity_days"]))
            else:
                pair = pki.issue_certificate(
                    issuer, cn, organization=props.get("organization") or None,
                    dns_names=tuple(props.get("dns_names") or ()),
                    ip_addresses=tuple(props.get("ip_addresses") or ()),
                    server=bool(props.get("server", True)), client=bool(props.get("client", False)),
                    days=int(props["validity_days"]))
        outs = {**props, "cert_pem": pair.cert_pem, "key_pem": pair.key_pem,
                "not_after": pki.not_after(pair.cert_pem).isoformat()}
        return CreateResult(id_=f"{kind}:{cn}:{pair.cert.serial_number:x}", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        from infra import pki

        result = super().diff(_id, olds, news)
        # Rotation: a certificate close to expiry is re-issued on the next `pulumi up`.
        if olds.get("cert_pem") and pki.needs_rotation(olds["cert_pem"], int(news["rotate_before_days"])):
            return DiffResult(changes=True, replaces=[*result.replaces, "not_after"],
                              delete_before_replace=False)
        return result


class Certificate(Resource):
    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]
    not_after: pulumi.Output[str]

    def __init__(self, name: str, *, kind: str, common_name: str, validity_days: int,
                 rotate_before_days: int = 30, issuer: Certificate | None = None,
                 dns_names: list[str] | None = None, ip_addresses: list[str] | None = None,
                 server: bool = True, client: bool = False, organization: str | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        props = {
            "kind": kind, "common_name": common_name, "validity_days": validity_days,
            "rotate_before_days": rotate_before_days,
            "issuer_cert_pem": issuer.cert_pem if issuer else None,
            "issuer_key_pem": issuer.key_pem if issuer else None,
            "dns_names": dns_names or [], "ip_addresses": ip_addresses or [],
            "server": server, "client": client, "organization": organization,
            "cert_pem": None, "key_pem": None, "not_after": None,
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_SECRET_OUTS))
        super().__init__(CertificateProvider(), name, props, opts)


class WireGuardKeyProvider(_ReplaceOnChange):
    def create(self, props: dict[str, Any]) -> CreateResult:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        key = X25519PrivateKey.generate()
        raw = serialization.Encoding.Raw
        private = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        public = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
        outs = {**props, "private_key": base64.b64encode(private).decode(),
                "public_key": base64.b64encode(public).decode()}
        return CreateResult(id_=outs["public_key"], outs=outs)


class WireGuardKey(Resource):
    private_key: pulumi.Output[str]
    public_key: pulumi.Output[str]

    def __init__(self, name: str, endpoint: str, opts: pulumi.ResourceOptions | None = None):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_SECRET_OUTS))
        super().__init__(WireGuardKeyProvider(), name,
                         {"endpoint": endpoint, "private_key": None, "public_key": None}, opts)


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

    def _apply(self, props: dict[str, Any]) -> dict[str, Any]:
        manifest = props["manifest"]
        api = self._api(props["kubeconfig"], manifest)
        meta = manifest["metadata"]
        obj = api.server_side_apply(body=manifest, name=meta["name"], namespace=meta.get("namespace"),
                                    field_manager="sovcloud", force_conflicts=True)
        return {**props, "uid": obj.metadata.uid}

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
