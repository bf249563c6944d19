"""YAML configs of the exporters, validated with pydantic: a bad file fails naming the field and the fix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

# The one error every config module raises (common/config.py); config.ConfigError still names it.
from common.config import ConfigError, load_yaml_file, validate
from dr import layout

NAME = r"^[a-z][a-z0-9-]*$"


class _Strict(BaseModel):
    # A typo in a key must fail, not be silently ignored (an ignored `timeout_seconds` is a hung probe).
    model_config = ConfigDict(extra="forbid", frozen=True)


def _timing(cfg) -> list[tuple[str, str]]:
    """A round must end before the next starts: rounds that overlap pile up requests behind a dead endpoint."""
    if cfg.timeout_seconds >= cfg.interval_seconds:
        return [("timeout_seconds", f"{cfg.timeout_seconds:g} s must be below interval_seconds "
                 f"({cfg.interval_seconds:g} s) so rounds never overlap; lower it or raise interval_seconds")]
    return []


def _repeated(items, key, field: str) -> list[tuple[str, str]]:
    """`field` (a format of the index) of every item whose `key` an earlier item has, naming that one."""
    first: dict = {}
    problems = []
    for i, item in enumerate(items):
        k = key(item)
        if k in first:
            problems.append((field.format(i), f"{k!r} is also {field.format(first[k])}: list each once"))
        first.setdefault(k, i)
    return problems


class ProbeTarget(_Strict):
    site: str = Field(pattern=NAME)
    service: Literal["api", "gateway", "s3"]
    url: HttpUrl
    expected_status: list[int] = Field(default=[200], min_length=1)
    timeout_seconds: float | None = Field(default=None, gt=0, le=60)
    # Every site has its own PKI, so trust and identity are per target: ca_file overrides the prober's, and
    # a client certificate lets the prober read an endpoint that rejects anonymous requests (the Kubernetes
    # API's /readyz) with an identity that has no other rights.
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> ProbeTarget:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file/client_key_file: give both (an identity needs its key) or neither")
        return self


class ProberConfig(_Strict):
    source_site: str = Field(pattern=NAME)
    interval_seconds: float = Field(default=15, gt=0, le=3600)
    timeout_seconds: float = Field(default=5, gt=0, le=60)
    # Above ~50 in-flight requests one Python event loop only queues them (measured in bench_exporters).
    concurrency: int = Field(default=50, ge=1, le=5000)
    ca_file: Path | None = None
    verify_tls: bool = True
    # A URL in the prober's own site on the path every probe takes (its gateway's health endpoint): while it
    # fails, the prober's site is cut off and its rounds are skipped rather than counted against the others.
    local_check_url: HttpUrl | None = None
    targets: list[ProbeTarget] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> ProberConfig:
        problems: list[tuple[str, str]] = []
        seen: dict[tuple[str, str, str], int] = {}
        for i, t in enumerate(self.targets):
            if t.site == self.source_site:
                problems.append((f"targets[{i}].site", f"site {t.site!r} is the source_site; probe the OTHER sites"))
            key = (t.site, t.service, str(t.url))
            if key in seen:
                problems.append((f"targets[{i}]", f"duplicate target {t.site}/{t.service} {t.url}: it is also "
                                 f"targets[{seen[key]}]; list each once"))
            seen.setdefault(key, i)
            if t.timeout_seconds is not None and t.timeout_seconds >= self.interval_seconds:
                problems.append((f"targets[{i}].timeout_seconds", f"{t.timeout_seconds:g} s must be below "
                                 f"interval_seconds ({self.interval_seconds:g} s) so rounds never overlap"))
        problems += _timing(self)
        if not self.verify_tls and any(t.client_cert_file for t in self.targets):
            problems.append(("verify_tls", "false would present client certificates to unverified servers; "
                             "set verify_tls: true and give ca_file"))
        if problems:
            raise ConfigError(problems, "prober exporter config")
        return self


class S3Store(_Strict):
    """One site's S3 endpoint (the shared layout: one per site, bucket sovcloud-backups)."""
    site: str = Field(pattern=NAME)
    endpoint_url: HttpUrl
    bucket: str = layout.BUCKET
    region: str = "us-east-1"
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - the variable name, not a secret

    def credentials(self) -> tuple[str | None, str | None]:
        return os.environ.get(self.access_key_env), os.environ.get(self.secret_key_env)


class ExpectedBackup(_Strict):
    site: str = Field(pattern=NAME)
    dataset: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    rpo_seconds: float = Field(default=86400, gt=0)


class BackupConfig(_Strict):
    interval_seconds: float = Field(default=60, gt=0)
    timeout_seconds: float = Field(default=20, gt=0, le=300)
    stores: list[S3Store] = Field(min_length=1)
    # Datasets that must exist: one never backed up shows age since the epoch, so BackupTooOld fires.
    expected: list[ExpectedBackup] = Field(default_factory=list)
    default_rpo_seconds: float = Field(default=86400, gt=0)
    verify_key_file: Path | None = None
    # Manifests checked per (store, site, dataset), newest first, before giving up on finding a good one.
    max_candidates: int = Field(default=5, ge=1, le=100)

    @model_validator(mode="after")
    def _check(self) -> BackupConfig:
        problems = _timing(self) + _repeated(self.stores, lambda s: s.site, "stores[{}].site")
        problems += _repeated(self.expected, lambda e: f"{e.site}/{e.dataset}", "expected[{}]")
        if problems:
            raise ConfigError(problems, "backup exporter config")
        return self


class DrillConfig(_Strict):
    interval_seconds: float = Field(default=60, gt=0)
    timeout_seconds: float = Field(default=20, gt=0, le=300)
    stores: list[S3Store] = Field(min_length=1)
    sites: list[str] = Field(min_length=1)
    max_age_seconds: float = Field(default=7 * 86400, gt=0)
    rto_target_seconds: float = Field(default=4 * 3600, gt=0)
    rpo_target_seconds: float = Field(default=86400, gt=0)

    @model_validator(mode="after")
    def _check(self) -> DrillConfig:
        problems = _timing(self) + _repeated(self.stores, lambda s: s.site, "stores[{}].site")
        problems += _repeated(self.sites, str, "sites[{}]")
        if problems:
            raise ConfigError(problems, "drills exporter config")
        return self


class TlsEndpoint(_Strict):
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    server_name: str | None = None


class CertConfig(_Strict):
    interval_seconds: float = Field(default=300, gt=0)
    timeout_seconds: float = Field(default=5, gt=0, le=60)
    paths: list[Path] = Field(default_factory=list)
    endpoints: list[TlsEndpoint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> CertConfig:
        if not self.paths and not self.endpoints:
            raise ValueError("paths/endpoints: give at least one PEM path or TLS endpoint to watch")
        problems = _timing(self) + _repeated(self.paths, str, "paths[{}]")
        problems += _repeated(self.endpoints, lambda e: f"{e.host}:{e.port}", "endpoints[{}]")
        if problems:
            raise ConfigError(problems, "certs exporter config")
        return self


class WgPeer(_Strict):
    public_key: str = Field(min_length=1)
    site: str = Field(pattern=NAME)


class TransportConfig(_Strict):
    interval_seconds: float = Field(default=15, gt=0)
    timeout_seconds: float = Field(default=5, gt=0, le=60)
    command: list[str] = Field(default=["wg", "show", "all", "dump"], min_length=1)
    # WireGuard re-handshakes every 2 minutes on an active tunnel; 180 s without one means it is dead.
    handshake_timeout_seconds: float = Field(default=180, gt=0)
    peers: list[WgPeer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> TransportConfig:
        if problems := _timing(self) + _repeated(self.peers, lambda p: p.public_key, "peers[{}].public_key"):
            raise ConfigError(problems, "transport exporter config")
        return self


MODELS: dict[str, type[_Strict]] = {
    "prober": ProberConfig, "backup": BackupConfig, "drills": DrillConfig, "certs": CertConfig,
    "transport": TransportConfig,
}


def parse(kind: str, data: object, source: str | None = None) -> _Strict:
    """The `kind` exporter's config from `data` (read from `source`, named in the error), or ConfigError."""
    what = f"{kind} exporter config" + (f" {source}" if source else "")
    return validate(MODELS[kind], data, what)


def load(kind: str, path: str | Path) -> _Strict:
    """The `kind` exporter's config from the YAML file `path`, or ConfigError naming every problem: the file's,
    then what it needs from the node (the files it names, the S3 keys in the environment)."""
    what = f"{kind} exporter config {path}"
    cfg = load_yaml_file(Path(path), MODELS[kind], f"{kind} exporter config")
    if problems := node_problems(cfg):
        raise ConfigError(problems, what)
    return cfg


def node_problems(cfg: _Strict) -> list[tuple[str, str]]:
    """What the config names that this node lacks: a file it reads, an environment variable with an S3 key. An
    exporter started without them would only report every store as unreachable."""
    problems: list[tuple[str, str]] = []

    def need_file(field: str, file: Path | None) -> None:
        if file is not None and not file.is_file():
            problems.append((field, f"{file} {'is not a file' if file.exists() else 'does not exist'}; "
                             "point it at the file the monitoring role installs"))

    for field in ("ca_file", "verify_key_file"):
        need_file(field, getattr(cfg, field, None))
    for i, t in enumerate(getattr(cfg, "targets", [])):
        for field in ("ca_file", "client_cert_file", "client_key_file"):
            need_file(f"targets[{i}].{field}", getattr(t, field))
    for i, store in enumerate(getattr(cfg, "stores", [])):
        for field in ("access_key_env", "secret_key_env"):
            if not os.environ.get(name := getattr(store, field)):
                problems.append((f"stores[{i}].{field}", f"${name} is not set in the exporter's environment: "
                                 f"export the S3 monitor identity's {field.split('_')[0]} key in it (the "
                                 "environment file the monitoring role writes), or name the variable that holds it"))
    return problems
