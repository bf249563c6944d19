"""YAML configs of the exporters, validated with pydantic: a bad file fails naming the field and the fix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationInfo, field_validator, model_validator

# The one error every config module raises (common/config.py); config.ConfigError still names it.
from common.config import ConfigError, collect, load_yaml_file, raise_collected, validate
from dr import layout

NAME = r"^[a-z][a-z0-9-]*$"


class _Strict(BaseModel):
    # A typo in a key must fail, not be silently ignored (an ignored `timeout_seconds` is a hung probe).
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Config(_Strict):
    """An exporter's config: checks across its fields run as soon as the fields they read parse and report with
    the fields' own problems (common.config.collect); this raises them when every field parses."""

    @model_validator(mode="after")
    def _report(self, info: ValidationInfo) -> _Config:
        raise_collected(info)
        return self


def _timing(timeout: float, info: ValidationInfo) -> float:
    """A round must end before the next starts: rounds that overlap pile up requests behind a dead endpoint."""
    interval = info.data.get("interval_seconds")
    if interval is not None and timeout >= interval:
        collect(info, [("timeout_seconds", f"{timeout:g} s must be below interval_seconds ({interval:g} s) so "
                        "rounds never overlap; lower it or raise interval_seconds")])
    return timeout


def _once(key=str, field: str = "[{}]"):
    """A field validator of a list: every item whose `key` an earlier item has is a problem at `field` (a format
    of the index, after the list's name), naming that earlier one."""

    def check(items: list, info: ValidationInfo) -> list:
        first: dict = {}
        problems = []
        for i, item in enumerate(items):
            k = key(item)
            where = info.field_name + field.format(i)
            if k in first:
                problems.append((where, f"{k!r} is also {info.field_name}{field.format(first[k])}: list each once"))
            first.setdefault(k, i)
        collect(info, problems)
        return items

    return check


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


class ProberConfig(_Config):
    source_site: str = Field(pattern=NAME)
    interval_seconds: float = Field(default=15, gt=0, le=3600)
    timeout_seconds: float = Field(default=5, gt=0, le=60, validate_default=True)
    # Above ~50 in-flight requests one Python event loop only queues them (measured in bench_exporters).
    concurrency: int = Field(default=50, ge=1, le=5000)
    ca_file: Path | None = None
    verify_tls: bool = True
    # A URL in the prober's own site on the path every probe takes (its gateway's health endpoint): while it
    # fails, the prober's site is cut off and its rounds are skipped rather than counted against the others.
    local_check_url: HttpUrl | None = None
    targets: list[ProbeTarget] = Field(min_length=1)

    _timing = field_validator("timeout_seconds")(_timing)

    @field_validator("targets")
    @classmethod
    def _targets(cls, targets: list[ProbeTarget], info: ValidationInfo) -> list[ProbeTarget]:
        problems: list[tuple[str, str]] = []
        seen: dict[tuple[str, str, str], int] = {}
        source, interval = info.data.get("source_site"), info.data.get("interval_seconds")
        for i, t in enumerate(targets):
            if t.site == source:
                problems.append((f"targets[{i}].site", f"site {t.site!r} is the source_site; probe the OTHER sites"))
            key = (t.site, t.service, str(t.url))
            if key in seen:
                problems.append((f"targets[{i}]", f"duplicate target {t.site}/{t.service} {t.url}: it is also "
                                 f"targets[{seen[key]}]; list each once"))
            seen.setdefault(key, i)
            if t.timeout_seconds is not None and interval is not None and t.timeout_seconds >= interval:
                problems.append((f"targets[{i}].timeout_seconds", f"{t.timeout_seconds:g} s must be below "
                                 f"interval_seconds ({interval:g} s) so rounds never overlap"))
        if info.data.get("verify_tls") is False and any(t.client_cert_file for t in targets):
            problems.append(("verify_tls", "false would present client certificates to unverified servers; "
                             "set verify_tls: true and give ca_file"))
        collect(info, problems)
        return targets


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


class BackupConfig(_Config):
    interval_seconds: float = Field(default=60, gt=0)
    timeout_seconds: float = Field(default=20, gt=0, le=300, validate_default=True)
    stores: list[S3Store] = Field(min_length=1)
    # Datasets that must exist: one never backed up shows age since the epoch, so BackupTooOld fires.
    expected: list[ExpectedBackup] = Field(default_factory=list)
    default_rpo_seconds: float = Field(default=86400, gt=0)
    verify_key_file: Path | None = None
    # Manifests checked per (store, site, dataset), newest first, before giving up on finding a good one.
    max_candidates: int = Field(default=5, ge=1, le=100)

    _timing = field_validator("timeout_seconds")(_timing)
    _one_store_per_site = field_validator("stores")(_once(lambda s: s.site, "[{}].site"))
    _each_dataset_once = field_validator("expected")(_once(lambda e: f"{e.site}/{e.dataset}"))


class DrillConfig(_Config):
    interval_seconds: float = Field(default=60, gt=0)
    timeout_seconds: float = Field(default=20, gt=0, le=300, validate_default=True)
    stores: list[S3Store] = Field(min_length=1)
    sites: list[str] = Field(min_length=1)
    max_age_seconds: float = Field(default=7 * 86400, gt=0)
    rto_target_seconds: float = Field(default=4 * 3600, gt=0)
    rpo_target_seconds: float = Field(default=86400, gt=0)

    _timing = field_validator("timeout_seconds")(_timing)
    _one_store_per_site = field_validator("stores")(_once(lambda s: s.site, "[{}].site"))
    _each_site_once = field_validator("sites")(_once())


class TlsEndpoint(_Strict):
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    server_name: str | None = None


class CertConfig(_Config):
    interval_seconds: float = Field(default=300, gt=0)
    timeout_seconds: float = Field(default=5, gt=0, le=60, validate_default=True)
    paths: list[Path] = Field(default_factory=list)
    endpoints: list[TlsEndpoint] = Field(default_factory=list, validate_default=True)

    _timing = field_validator("timeout_seconds")(_timing)
    _each_path_once = field_validator("paths")(_once())

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, endpoints: list[TlsEndpoint], info: ValidationInfo) -> list[TlsEndpoint]:
        if not endpoints and info.data.get("paths") == []:
            collect(info, [("paths/endpoints", "give at least one PEM path or TLS endpoint to watch")])
        return _once(lambda e: f"{e.host}:{e.port}")(endpoints, info)


class WgPeer(_Strict):
    public_key: str = Field(min_length=1)
    site: str = Field(pattern=NAME)


class TransportConfig(_Config):
    interval_seconds: float = Field(default=15, gt=0)
    timeout_seconds: float = Field(default=5, gt=0, le=60, validate_default=True)
    command: list[str] = Field(default=["wg", "show", "all", "dump"], min_length=1)
    # WireGuard re-handshakes every 2 minutes on an active tunnel; 180 s without one means it is dead.
    handshake_timeout_seconds: float = Field(default=180, gt=0)
    peers: list[WgPeer] = Field(default_factory=list)

    _timing = field_validator("timeout_seconds")(_timing)
    _each_key_once = field_validator("peers")(_once(lambda p: p.public_key, "[{}].public_key"))


MODELS: dict[str, type[_Config]] = {
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
