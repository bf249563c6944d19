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
        seen: set[tuple[str, str, str]] = set()
        for i, t in enumerate(self.targets):
            if t.site == self.source_site:
                problems.append((f"targets[{i}].site", f"site {t.site!r} is the source_site; probe the OTHER sites"))
            key = (t.site, t.service, str(t.url))
            if key in seen:
                problems.append((f"targets[{i}]", f"duplicate target {t.site}/{t.service} {t.url}"))
            seen.add(key)
        if self.timeout_seconds >= self.interval_seconds:
            problems.append(("timeout_seconds", "must be below interval_seconds so rounds never overlap"))
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


class DrillConfig(_Strict):
    interval_seconds: float = Field(default=60, gt=0)
    timeout_seconds: float = Field(default=20, gt=0, le=300)
    stores: list[S3Store] = Field(min_length=1)
    sites: list[str] = Field(min_length=1)
    max_age_seconds: float = Field(default=7 * 86400, gt=0)
    rto_target_seconds: float = Field(default=4 * 3600, gt=0)
    rpo_target_seconds: float = Field(default=86400, gt=0)


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


MODELS: dict[str, type[_Strict]] = {
    "prober": ProberConfig, "backup": BackupConfig, "drills": DrillConfig, "certs": CertConfig,
    "transport": TransportConfig,
}


def parse(kind: str, data: object, source: str | None = None) -> _Strict:
    """The `kind` exporter's config from `data` (read from `source`, named in the error), or ConfigError."""
    what = f"{kind} exporter config" + (f" {source}" if source else "")
    return validate(MODELS[kind], data, what)


def load(kind: str, path: str | Path) -> _Strict:
    return load_yaml_file(Path(path), MODELS[kind], f"{kind} exporter config")
