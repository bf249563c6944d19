"""Pulumi dynamic providers for what has no provider plugin here.

The pulumi-tls/random provider plugins cannot be built from the Go module proxy this project is restricted
to, so keys and certificates are dynamic resources, each of a named type (`pulumi-python:dynamic/sovcloud:
Certificate`, ...). Private material is always returned as a Pulumi secret (encrypted in state, masked in
logs). Host-level steps (node hardening, control-plane bootstrap) are `Playbook` resources: `ansible-playbook`
runs inside the graph, in order. In-cluster objects are typed pulumi-kubernetes resources (infra/kube.py).

The providers' methods, and the helpers they call, import what they use inside the function: Pulumi
serializes a dynamic provider with dill and runs it in a process of its own, so each method brings its
imports with it rather than relying on this module's state there.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, Resource, ResourceProvider

_SECRET_OUTS = ["key_pem", "private_key", "private_key_pem", "value"]
# The one type every dynamic resource had before they were named: their alias, so that a stack deployed then
# keeps them (same provider, new URN) instead of replacing its keys and certificates.
UNNAMED = "pulumi-python:dynamic:Resource"


class _Named(Resource):
    """A dynamic resource of a named type (`class X(_Named, module="sovcloud", name="X")`)."""

    def __init__(self, provider: ResourceProvider, name: str, props: dict[str, Any],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(provider, name, props, pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=UNNAMED)])))


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


class Certificate(_Named, module="sovcloud", name="Certificate"):
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


class WireGuardKey(_Named, module="sovcloud", name="WireGuardKey"):
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


class SecretKey(_Named, module="sovcloud", name="SecretKey"):
    """Random key material, e.g. the AES key of the kube-apiserver encryption provider."""

    value: pulumi.Output[str]

    def __init__(self, name: str, purpose: str, nbytes: int = 32, opts: pulumi.ResourceOptions | None = None):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_SECRET_OUTS))
        super().__init__(SecretKeyProvider(), name, {"purpose": purpose, "bytes": nbytes, "value": None}, opts)


def _key_pair(props: dict[str, Any], key, kind: str) -> CreateResult:
    """A generated private key's PEM pair (PKCS#8, SubjectPublicKeyInfo) as a key resource's outputs."""
    from cryptography.hazmat.primitives import serialization

    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return CreateResult(id_=f"{kind}-{os.urandom(4).hex()}",
                        outs={**props, "private_key_pem": private, "public_key_pem": public})


class SigningKeyProvider(_ReplaceOnChange):
    def create(self, props: dict[str, Any]) -> CreateResult:
        from cryptography.hazmat.primitives.asymmetric import ec

        return _key_pair(props, ec.generate_private_key(ec.SECP256R1()), "ecdsa")


class SigningKey(_Named, module="sovcloud", name="SigningKey"):
    """An ECDSA P-256 key pair, e.g. the service-account token signing key of a cluster."""

    private_key_pem: pulumi.Output[str]
    public_key_pem: pulumi.Output[str]

    def __init__(self, name: str, purpose: str, opts: pulumi.ResourceOptions | None = None):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_SECRET_OUTS))
        super().__init__(SigningKeyProvider(), name,
                         {"purpose": purpose, "private_key_pem": None, "public_key_pem": None}, opts)


class Ed25519KeyProvider(_ReplaceOnChange):
    def create(self, props: dict[str, Any]) -> CreateResult:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return _key_pair(props, Ed25519PrivateKey.generate(), "ed25519")


class Ed25519Key(_Named, module="sovcloud", name="Ed25519Key"):
    """An Ed25519 key pair, e.g. the one that signs backup manifests (dr/crypto.py verifies them)."""

    private_key_pem: pulumi.Output[str]
    public_key_pem: pulumi.Output[str]

    def __init__(self, name: str, purpose: str, opts: pulumi.ResourceOptions | None = None):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_SECRET_OUTS))
        super().__init__(Ed25519KeyProvider(), name,
                         {"purpose": purpose, "private_key_pem": None, "public_key_pem": None}, opts)


class PlaybookProvider(ResourceProvider):
    """`ansible-playbook` as a resource: host-level steps ordered by the graph like any other resource.

    Playbooks are idempotent, so create and update are the same run. Any input change runs it again: the
    content fingerprint of the playbook and its roles, the inventory, the vars and the controller-side files
    it installs (a rotated certificate reaches the nodes on the next `pulumi up`). Delete leaves the hosts as
    they are: nobody wants a node un-hardened; nodes go away with their machines.
    """

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        from pathlib import Path

        failures = []
        if not Path(news.get("playbook") or "").is_file():
            failures.append(CheckFailure("playbook", f"{news.get('playbook')} is not a playbook file"))
        if not Path(news.get("files_dir") or "/").is_absolute():
            failures.append(CheckFailure("files_dir", "must be an absolute directory on the controller"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        inputs = ("playbook", "fingerprint", "inventory", "limit", "extra_vars", "files", "files_dir", "triggers")
        changed = [k for k in inputs if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def _run(self, props: dict[str, Any]) -> dict[str, Any]:
        import json
        import tempfile
        from pathlib import Path

        files_dir = Path(props["files_dir"])
        for rel, content in sorted((props.get("files") or {}).items()):
            path = files_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Write only what changed: the playbook's copy tasks then report changed=0 on a converged host.
            if not path.exists() or path.read_text() != content:
                path.touch(mode=0o600)
                path.write_text(content)
        playbook = Path(props["playbook"])
        with tempfile.TemporaryDirectory(prefix="sovcloud-playbook-") as tmp:
            inventory, extra = Path(tmp) / "inventory.json", Path(tmp) / "vars.json"
            # Sorted: maps reach the provider in no fixed key order (the engine is Go), and Ansible orders a
            # group's hosts as the inventory lists them; etcd's member list must not reorder between runs.
            inventory.write_text(json.dumps(props["inventory"], sort_keys=True))
            extra.write_text(json.dumps(_integral(props.get("extra_vars") or {})))
            run = run_playbook(playbook, inventory, extra_vars_file=extra, limit=props.get("limit"),
                               timeout=int(props.get("timeout_s") or 1800))
        if run.returncode != 0:
            failed = [line for line in run.stdout.splitlines() if line.startswith(("fatal:", "failed:", "ERROR"))]
            tail = "\n".join(failed[-10:] or run.stdout.splitlines()[-30:])
            raise RuntimeError(f"ansible-playbook {playbook.name} --limit {props.get('limit')} "
                               f"failed (rc={run.returncode}):\n{tail}\n{run.stderr.strip()[-2000:]}")
        return {**props, "recap": run.recap, "changes": run.changes, "seconds": round(run.seconds, 1)}

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props['name']}-{os.urandom(4).hex()}", outs=self._run(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]):
        from pulumi.dynamic import UpdateResult

        return UpdateResult(outs=self._run(news))


def ansible_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every playbook of the project runs in: the repo's ansible.cfg, the venv's tools, and
    mitogen's strategy (a persistent interpreter per node instead of a Python process per task and node)."""
    import sys
    from pathlib import Path

    import ansible_mitogen

    from toolchain import REPO

    env = dict(os.environ if base is None else base)
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_STRATEGY="mitogen_linear",
               ANSIBLE_STRATEGY_PLUGINS=str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


@dataclass
class PlaybookRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    recap: dict[str, dict[str, int]]  # PLAY RECAP: host -> {ok, changed, unreachable, failed, skipped, ...}
    changes: dict[str, list[str]]  # host -> the tasks and handlers that reported `changed`


def run_playbook(playbook: Path, inventory: Path, *, extra_vars_file: Path | None = None, limit: str | None = None,
                 forks: int | None = None, timeout: float = 1800, extra_args: Sequence[str] = ()) -> PlaybookRun:
    """The one way the project runs `ansible-playbook`: the Playbook resource's runs, and those of the tests'
    and benchmarks' standalone nodes (lab/standalone.py). Roles are the playbook's own (playbooks/roles)."""
    import shutil
    import subprocess
    import sys
    import time

    from toolchain import REPO

    venv_bin = Path(sys.executable).parent / "ansible-playbook"
    binary = str(venv_bin) if venv_bin.exists() else shutil.which("ansible-playbook") or "ansible-playbook"
    cmd = [binary, "-i", str(inventory), *(["-e", f"@{extra_vars_file}"] if extra_vars_file else []),
           *(["-f", str(forks)] if forks else []), str(playbook), *(["--limit", limit] if limit else []),
           *extra_args]
    env = {**ansible_env(), "ANSIBLE_ROLES_PATH": str(Path(playbook).parent / "roles")}
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return PlaybookRun(r.returncode, r.stdout, r.stderr, time.monotonic() - t0, parse_recap(r.stdout),
                       changed_tasks(r.stdout))


def parse_recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines -> {host: {ok, changed, unreachable, failed, skipped, rescued, ignored}}."""
    import re

    return {host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", rest)}
            for host, rest in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", stdout, re.M)}


def changed_tasks(stdout: str) -> dict[str, list[str]]:
    """host -> the tasks and handlers that reported `changed` in ansible-playbook's default output, so a
    re-run that should have changed nothing says what it changed."""
    import re

    changes: dict[str, list[str]] = {}
    task = ""
    for line in stdout.splitlines():
        if m := re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\] \**$", line):
            task = m.group(1)
        elif m := re.match(r"^changed: \[([^\]]+)\]", line):
            changes.setdefault(m.group(1).split(" -> ")[0], []).append(task)
    return changes


def _integral(value: Any) -> Any:
    """Pulumi carries every number as a double: 6443 arrives as 6443.0, which `--secure-port` rejects."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def playbook_fingerprint(playbook: str, sources: list[str] = ()) -> str:
    """sha256 over the playbook, every file of the roles it names (and their role dependencies) and the
    controller-side `sources` it copies to the hosts (files, or directories taken whole)."""
    import hashlib
    from pathlib import Path

    import yaml

    path = Path(playbook)
    roles_dir = path.parent / "roles"
    plays = yaml.safe_load(path.read_text())
    pending = [r["role"] if isinstance(r, dict) else r for play in plays for r in play.get("roles", [])]
    # Roles a play's tasks include (ansible.builtin.include_role / import_role) count too.
    pending += [task[key]["name"] for play in plays for section in ("pre_tasks", "tasks", "post_tasks")
                for task in play.get(section, []) for key in task
                if key.split(".")[-1] in ("include_role", "import_role")]
    seen: set[str] = set()
    digest = hashlib.sha256(path.read_bytes())
    while pending:
        role = pending.pop()
        if role in seen:
            continue
        seen.add(role)
        meta = roles_dir / role / "meta" / "main.yml"
        if meta.exists():
            deps = (yaml.safe_load(meta.read_text()) or {}).get("dependencies") or []
            pending += [d["role"] if isinstance(d, dict) else d for d in deps]
    for role in sorted(seen):
        for f in sorted(p for p in (roles_dir / role).rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(roles_dir)).encode() + b"\0" + f.read_bytes())
    for source in sorted(sources):
        root = Path(source)
        files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
            if root.is_dir() else [root] if root.is_file() else []
        digest.update(f"{root}\0{len(files)}".encode())  # a missing source counts too (it appears later)
        for f in files:
            digest.update(str(f.relative_to(root) if root.is_dir() else f.name).encode() + b"\0")
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


class Playbook(_Named, module="sovcloud", name="Playbook"):
    """One `ansible-playbook` run over `inventory` (limited to `limit`), after the resources it depends on.

    `files` (path relative to `files_dir` -> content, e.g. the cluster's PKI) are written on the controller
    with mode 0600 before the run, for the playbook to install; they and `extra_vars` are Pulumi secrets.
    `sources` (controller paths the playbook copies, e.g. binaries or packages) are part of its fingerprint:
    when one changes the playbook runs again. `triggers` (e.g. other Playbooks' outputs): it runs again
    whenever they change.
    """

    recap: pulumi.Output[dict]
    seconds: pulumi.Output[float]

    def __init__(self, name: str, playbook: str, inventory: pulumi.Input[dict], *, limit: str | None = None,
                 extra_vars: pulumi.Input[dict] | None = None, files: pulumi.Input[dict] | None = None,
                 files_dir: str, timeout_s: int = 1800, sources: list[str] = (),
                 triggers: pulumi.Input[list] | None = None, opts: pulumi.ResourceOptions | None = None):
        super().__init__(PlaybookProvider(), name, {
            "name": name, "playbook": playbook, "fingerprint": playbook_fingerprint(playbook, sources),
            "inventory": inventory, "limit": limit, "extra_vars": pulumi.Output.secret(extra_vars or {}),
            "files": pulumi.Output.secret(files or {}), "files_dir": files_dir, "timeout_s": timeout_s,
            "triggers": triggers or [], "recap": None, "seconds": None}, opts)


class KubeObjectProvider(ResourceProvider):
    """What stacks deployed before the typed Kubernetes resources hold: each in-cluster object was a dynamic
    resource of this provider. Those objects are now declared as typed resources (infra/kube.py), which adopt
    them by server-side apply; this provider only lets the engine drop the old entries (it reaches it by this
    module path, pickled in the state) without touching the cluster, so the upgrade deletes nothing.
    Remove it once no stack holds such an entry (`pulumi stack --show-urns | grep dynamic:Resource`)."""

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=False)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Leave the object: its typed resource owns it now."""

