"""DR configuration (YAML): the sites' S3 endpoints, keys, staging dir and retention policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUCKET = "sovcloud-backups"


class ConfigError(Exception):
    pass


class Retention(BaseModel):
    model_config = ConfigDict(extra="forbid")
    daily: int = Field(default=7, ge=0)
    weekly: int = Field(default=4, ge=0)
    monthly: int = Field(default=6, ge=0)


class SiteS3(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,40}$")
    endpoint: str = Field(pattern=r"^https?://")
    # Data residency (SC-DATA-01): a backup target outside the country is a config error, not a choice.
    country: Literal["KZ"] = "KZ"
    bucket: str = BUCKET
    region: str = "kz-1"
    credentials_file: Path  # JSON {"access_key": ..., "secret_key": ...}; kept out of the config itself
    object_lock_days: int = Field(default=0, ge=0, description="default GOVERNANCE retention; 0 = lock off")

    def credentials(self) -> tuple[str, str]:
        try:
            data = json.loads(self.credentials_file.read_text())
            return data["access_key"], data["secret_key"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"sites[{self.name}].credentials_file {self.credentials_file}: need JSON "
                f'{{"access_key": ..., "secret_key": ...}} ({err})'
            ) from None


class DrConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sites: list[SiteS3] = Field(min_length=1)
    primary: str
    kek_file: Path | None = None  # None: the KEK comes from $SOVCLOUD_DR_KEK
    signing_key_file: Path | None = None  # only the backup side needs it
    verify_key_file: Path
    staging_dir: Path
    part_size_mib: int = Field(default=8, ge=5, le=512)  # S3 minimum part size is 5 MiB
    retention: Retention = Retention()
    rpo_seconds: int = Field(default=86400, gt=0)
    rto_seconds: int = Field(default=3600, gt=0)

    @model_validator(mode="after")
    def _check(self) -> DrConfig:
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError(f"sites[].name must be unique; got {names}")
        if self.primary not in names:
            raise ValueError(f"primary {self.primary!r} is not one of sites[].name {names}")
        return self

    def site(self, name: str) -> SiteS3:
        for s in self.sites:
            if s.name == name:
                return s
        raise ConfigError(f"site {name!r} not in the DR config; known: {[s.name for s in self.sites]}")

    def ordered_sites(self) -> list[SiteS3]:
        """Primary first, then the replicas."""
        return sorted(self.sites, key=lambda s: s.name != self.primary)

    @property
    def part_size(self) -> int:
        return self.part_size_mib << 20


def load_config(path: Path | str) -> DrConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the DR config: {err}") from None
    try:
        cfg = DrConfig.model_validate(data)
    except ValidationError as err:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{path}: invalid DR config:\n" + "\n".join(lines)) from None
    # Relative paths are relative to the config file, so a config dir is self-contained.
    base = path.parent

    def rel(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    cfg.kek_file, cfg.signing_key_file = rel(cfg.kek_file), rel(cfg.signing_key_file)
    cfg.verify_key_file, cfg.staging_dir = rel(cfg.verify_key_file), rel(cfg.staging_dir)
    for s in cfg.sites:
        s.credentials_file = rel(s.credentials_file)
    return cfg
