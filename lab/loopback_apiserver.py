"""A kube-apiserver with its etcd on loopback: the stand-in API the node agents' tests and benchmark run against
(no controllers, no kubelet: objects only). Every request of the identities in `audited` is written to an audit
log, one line each, so a caller can count an agent's requests from the server's side.

    with LoopbackApiserver(tmp_dir, audited=("netpol-agent",)) as api:
        cert, key = api.identity("netpol-agent")
        ... api.server, api.ca ...
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from common import process
from common.wait import until
from dr.restore import free_port
from dr.sources import EtcdProcess
from infra import pki

ADMIN = "loopback-admin"


class LoopbackApiserver:
    def __init__(self, base: Path, audited: tuple[str, ...] = ()):
        self.dir = base
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.audited = audited
        self.audit_log = self.dir / "audit.log"
        self.log = self.dir / "kube-apiserver.log"
        self._ca = pki.create_root_ca("loopback-kubernetes-ca")
        self.ca = self._write("ca.crt", self._ca.cert_pem)
        self.etcd = EtcdProcess(self.dir / "etcd", free_port(), free_port(), name="loopback")
        self.proc: subprocess.Popen | None = None

    def _write(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text)
        path.chmod(0o600)
        return path

    def identity(self, name: str, group: str = "system:masters") -> tuple[Path, Path]:
        """(certificate, key) files of a client `name` in `group` (default: may do anything)."""
        pair = pki.issue_certificate(self._ca, name, organization=group, server=False, client=True)
        return self._write(f"{name}.crt", pair.cert_pem), self._write(f"{name}.key", pair.key_pem)

    def start(self, deadline_s: float = 90) -> LoopbackApiserver:
        exe = shutil.which("kube-apiserver")
        if exe is None:
            raise RuntimeError("kube-apiserver not found on PATH: run `make setup`")
        etcd = self.etcd.start()
        serving = pki.issue_certificate(self._ca, "kube-apiserver", dns_names=("localhost",),
                                        ip_addresses=("127.0.0.1",))
        sa = pki.create_root_ca("loopback-service-accounts")  # an EC key pair; only its keys are used
        sa_key = self._write("sa.key", sa.key_pem)
        sa_pub = self._write("sa.pub", sa.cert_pem)
        rules = [{"level": "Metadata", "users": list(self.audited)}] if self.audited else []
        policy = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                  # One line per request: when it arrived (a watch would also log its end otherwise).
                  "omitStages": ["ResponseStarted", "ResponseComplete", "Panic"],
                  "rules": [*rules, {"level": "None"}]}
        args = [
            exe, f"--etcd-servers={etcd.endpoint}",
            "--bind-address=127.0.0.1", f"--secure-port={self.port}", "--advertise-address=127.0.0.1",
            f"--tls-cert-file={self._write('apiserver.crt', serving.cert_pem)}",
            f"--tls-private-key-file={self._write('apiserver.key', serving.key_pem)}",
            f"--client-ca-file={self.ca}", "--authorization-mode=RBAC",
            f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range=10.96.0.0/16",
            # No controller-manager creates the namespaces' default service accounts: pods go in without one.
            "--disable-admission-plugins=ServiceAccount",
            f"--audit-policy-file={self._write('audit-policy.json', json.dumps(policy))}",
            f"--audit-log-path={self.audit_log}", "--audit-log-format=json", "--audit-log-maxbackup=0",
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - fixed argv
        tls = self._admin_tls = ssl.create_default_context(cafile=self.ca)
        tls.load_cert_chain(*self.identity(ADMIN))

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited ({self.proc.returncode}); see {self.log}")
            with urllib.request.urlopen(f"{self.server}/readyz", context=tls, timeout=5) as r:  # noqa: S310
                return r.status == 200

        try:
            until(ready, seconds=deadline_s, every=0.5, what=f"kube-apiserver on {self.server}/readyz",
                  retry_on=(OSError,))
        except BaseException:
            self.stop()
            raise
        return self

    def call(self, method: str, path: str, body: dict | None = None, patch: bool = False) -> dict:
        """One request as the admin (not audited); `patch`: `body` is a JSON merge patch."""
        kind = "application/merge-patch+json" if patch else "application/json"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.server}{path}", data, {"Content-Type": kind}, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(req, context=self._admin_tls, timeout=30) as r:  # noqa: S310
                return json.load(r)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read()[:300]!r}") from None

    def requests(self) -> Counter:
        """Requests so far by (user, verb, resource) from the audit log."""
        out: Counter = Counter()
        if not self.audit_log.exists():
            return out
        for line in self.audit_log.read_text().splitlines():
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            out[(event["user"]["username"], event["verb"], ref.get("resource", ""))] += 1
        return out

    def stop(self) -> None:
        process.stop(self.proc, grace_s=15)
        self.etcd.stop()

    def __enter__(self) -> LoopbackApiserver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
