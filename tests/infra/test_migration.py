"""A stack deployed by the previous version upgrades in place (issue 17.5): its in-cluster objects, once dynamic
KubeObjects, become typed pulumi-kubernetes resources without being deleted or recreated, and its keys keep their
values under their named types.

The previous version is its own infra/providers.py (tests/infra/previous, frozen), so the old state is what that
version wrote, by the same module paths. The cluster is a real kube-apiserver and etcd on loopback.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pulumi import automation as auto

from tests.conftest import require_tool
from toolchain import REPO

pytestmark = pytest.mark.tools
PREVIOUS = Path(__file__).parent / "previous"
MANIFESTS = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "egov-prod"}},
             {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "backup-schedule", "namespace": "egov-prod"}, "data": {"every": "5m"}},
             # The server completes its atomic matchConstraints with defaults, owned by the previous version's
             # field manager: the current apply must win that conflict (it did not, on the lab).
             {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": "sovcloud-platform-network-policies"},
              "spec": {"failurePolicy": "Fail", "validations": [{"expression": "true"}],
                       "matchConstraints": {"resourceRules": [{"apiGroups": ["networking.k8s.io"],
                                                               "apiVersions": ["v1"], "operations": ["DELETE"],
                                                               "resources": ["networkpolicies"]}]}}}]
# One program for both versions: the previous one had KubeObject, the current one infra.kube.
PROGRAM = """
import json, os
import pulumi
from infra import providers
manifests = json.loads(os.environ["MIGRATION_MANIFESTS"])
kubeconfig = open(os.environ["MIGRATION_KUBECONFIG"]).read()
key = providers.SecretKey("routes-psk", "what a key of the stack holds")
if hasattr(providers, "KubeObject"):
    ns = providers.KubeObject("egov-prod", kubeconfig, manifests[0])
    providers.KubeObject("backup-schedule", kubeconfig, manifests[1], opts=pulumi.ResourceOptions(depends_on=[ns]))
    providers.KubeObject("policy-guard", kubeconfig, manifests[2])
else:
    from infra import kube
    provider = kube.provider("local", kubeconfig)
    ns = kube.apply("egov-prod", manifests[0], provider)
    kube.apply("backup-schedule", manifests[1], provider, opts=pulumi.ResourceOptions(depends_on=[ns]))
    kube.apply("policy-guard", manifests[2], provider)
pulumi.export("key", key.value)
"""


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(cn: str, key, issuer=None, issuer_key=None, org: str | None = None, ip: str | None = None):
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                         *([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else [])])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=2))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    """etcd and the clusters' own kube-apiserver on loopback; yields an admin kubeconfig's path."""
    d = tmp_path_factory.mktemp("apiserver")
    ca_key, server_key, admin_key, sa_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    ca = _cert("migration-ca", ca_key)
    pem = serialization.Encoding.PEM
    (d / "ca.crt").write_bytes(ca.public_bytes(pem))
    (d / "server.crt").write_bytes(_cert("kube-apiserver", server_key, ca, ca_key, ip="127.0.0.1").public_bytes(pem))
    (d / "server.key").write_bytes(_pem_key(server_key))
    (d / "sa.key").write_bytes(_pem_key(sa_key))
    (d / "sa.pub").write_bytes(sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    procs = [subprocess.Popen(
        [require_tool("etcd"), "--data-dir", str(d / "etcd"), "--listen-client-urls", etcd_url,
         "--advertise-client-urls", etcd_url, "--listen-peer-urls", f"http://127.0.0.1:{peer_port}"],
        stdout=(d / "etcd.log").open("w"), stderr=subprocess.STDOUT)]
    procs.append(subprocess.Popen(
        [require_tool("kube-apiserver"), f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1",
         "--advertise-address=127.0.0.1", f"--secure-port={api_port}", f"--tls-cert-file={d / 'server.crt'}",
         f"--tls-private-key-file={d / 'server.key'}", f"--client-ca-file={d / 'ca.crt'}",
         f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
         "--service-account-issuer=https://kubernetes.default.svc", "--authorization-mode=RBAC",
         "--service-cluster-ip-range=10.96.0.0/16"],
        stdout=(d / "apiserver.log").open("w"), stderr=subprocess.STDOUT))
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    admin = _cert("migration-admin", admin_key, ca, ca_key, org="system:masters")
    kubeconfig = d / "admin.conf"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": f"https://127.0.0.1:{api_port}",
                                                   "certificate-authority-data": b64(ca.public_bytes(pem))}}],
        "users": [{"name": "admin", "user": {"client-certificate-data": b64(admin.public_bytes(pem)),
                                             "client-key-data": b64(_pem_key(admin_key))}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}]}))
    try:
        deadline = time.monotonic() + 90
        while subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"],
                             capture_output=True, check=False).returncode != 0:
            assert all(p.poll() is None for p in procs), (d / "apiserver.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "kube-apiserver not ready within 90s"
            time.sleep(1)
        yield kubeconfig
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)


def _uid(kubeconfig: Path, manifest: dict) -> str:
    """The live object's uid (a recreated object has another)."""
    meta = manifest["metadata"]
    namespace = ["-n", meta["namespace"]] if "namespace" in meta else []
    return json.loads(subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", manifest["kind"].lower(), meta["name"], *namespace,
         "-o", "json"], capture_output=True, text=True, check=True).stdout)["metadata"]["uid"]


def _stack(tmp_path: Path, kubeconfig: Path, version: str) -> auto.Stack:
    """The migration project's stack, run with the previous version's infra/providers.py or the current one."""
    project = tmp_path / "project"
    (project / "program").mkdir(parents=True, exist_ok=True)
    (project / "program" / "__main__.py").write_text(PROGRAM)
    (project / "Pulumi.yaml").write_text("name: sovcloud-migration\nruntime: python\nmain: program/\n")
    # (a stack without any config hands the language host `null` for it)
    (project / "Pulumi.lab.yaml").write_text("config:\n  sovcloud-migration:cluster: local\n")
    (tmp_path / "state").mkdir(exist_ok=True)
    path = [str(PREVIOUS)] if version == "previous" else []
    env = {"PULUMI_CONFIG_PASSPHRASE": "migration", "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
           "PYTHONPATH": os.pathsep.join([*path, str(REPO)]), "MIGRATION_KUBECONFIG": str(kubeconfig),
           "MIGRATION_MANIFESTS": json.dumps(MANIFESTS)}
    return auto.create_or_select_stack("lab", work_dir=str(project), opts=auto.LocalWorkspaceOptions(
        env_vars=env, secrets_provider="passphrase"))


def test_a_stack_of_the_previous_version_upgrades_in_place_deleting_nothing(tmp_path, apiserver):
    previous = _stack(tmp_path, apiserver, "previous")
    key = previous.up().outputs["key"].value
    urns = [r["urn"] for r in previous.export_stack().deployment["resources"]]
    assert sum("::pulumi-python:dynamic:Resource::" in u for u in urns) == 4  # the key and three KubeObjects
    uids = {m["kind"]: _uid(apiserver, m) for m in MANIFESTS}

    current = _stack(tmp_path, apiserver, "current")
    preview = current.preview().change_summary
    # The typed resources (and the cluster's provider) are created, adopting the objects by server-side apply;
    # the KubeObject entries leave the state; the key is the same resource under its named type.
    assert preview == {"create": 4, "delete": 3, "same": 2}, preview
    result = current.up()
    assert result.summary.resource_changes == {"create": 4, "delete": 3, "same": 2}
    assert result.outputs["key"].value == key
    for m in MANIFESTS:
        assert _uid(apiserver, m) == uids[m["kind"]], f"{m['kind']} was recreated"
    types = {r["type"] for r in current.export_stack().deployment["resources"]}
    assert types == {"pulumi:pulumi:Stack", "pulumi:providers:pulumi-python",
                     "pulumi-python:dynamic/sovcloud:SecretKey", "pulumi:providers:kubernetes",
                     "kubernetes:core/v1:Namespace", "kubernetes:core/v1:ConfigMap",
                     "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy"}
    # A second run changes nothing.
    assert current.preview().change_summary == {"same": 6}
