"""DR configuration (YAML): the sites' S3 endpoints, keys, staging dir and retention policy."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# The one error every config module raises (common/config.py); dr.config.ConfigError still names it.
from common.config import ConfigError, FieldError, collect, load_yaml_file, raise_collected
from dr import layout
from policies import rules

BUCKET = layout.BUCKET
WHAT = "DR config"
# S3's multipart limits: every part but the last is at least 5 MiB; above 512 MiB a part only costs memory.
PART_SIZE_MIB = (5, 512)


class Retention(BaseModel):
    model_config = ConfigDict(extra="forbid")
    daily: int = Field(default=7, ge=0)
    weekly: int = Field(default=4, ge=0)
    monthly: int = Field(default=6, ge=0)

    def horizon(self) -> tuple[int, str]:
        """The longest a backup can stay kept (in days, for backups taken at least daily) and which tier
        sets it: a tier of N keeps the newest backup of each of its N newest periods, so at most N days,
        N weeks or N months (31 days) old."""
        tiers = [
            (self.daily, f"retention.daily={self.daily}"),
            (7 * self.weekly, f"retention.weekly={self.weekly}"),
            (31 * self.monthly, f"retention.monthly={self.monthly}"),
        ]
        return max(tiers, key=lambda t: t[0])

    def horizon_days(self) -> int:
        return max(1, self.horizon()[0])  # S3 default retention is at least one day


class SiteS3(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,40}$")
    endpoint: str = Field(pattern=r"^https?://")
    # Data residency (SC-DATA-01): the country of the site's S3 (ISO 3166-1 alpha-2), one of the DR config's
    # allowed_countries; a backup target outside them is a config error, not a choice.
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    bucket: str = BUCKET
    region: str = "kz-1"
    # Keys are JSON files {"access_key": ..., "secret_key": ...}, kept out of the config itself.
    # The backup writer's: put, get, list (backup, sync, verify, restore, drills). It needs no delete right,
    # and should have none: then a stolen backup host cannot remove a backup.
    credentials_file: Path
    # Keys allowed to create the bucket, set its lock and delete expired versions (`init-buckets`, `prune`).
    # Unset: credentials_file is used for those too (one identity does everything).
    admin_credentials_file: Path | None = None
    # Every backup object and manifest is locked: COMPLIANCE, because GOVERNANCE retention can be lifted by
    # whoever may bypass it (the admin keys), which is the key an attacker wants. The bucket's default
    # retention locks each new version; dr checks the lock of every version it writes.
    object_lock_mode: str = "COMPLIANCE"
    # Days each version stays locked. Unset: the retention policy's horizon (Retention.horizon_days), so any
    # backup the policy still keeps is still locked; a shorter value is refused.
    object_lock_retain_days: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict) and "object_lock_days" in data:
            raise FieldError(
                "object_lock_days",
                "was replaced by object_lock_retain_days "
                "(COMPLIANCE mode, at least the retention policy's horizon): remove object_lock_days, and leave "
                "object_lock_retain_days out to derive it from retention",
            )
        return data

    @field_validator("object_lock_mode")
    @classmethod
    def _compliance(cls, v: str) -> str:
        if v != "COMPLIANCE":
            raise ValueError(
                f"{v!r} is not allowed: set COMPLIANCE (GOVERNANCE retention can be lifted with the admin keys, "
                "so it does not survive their theft; there is no unlocked mode)"
            )
        return v

    def credentials(self) -> tuple[str, str]:
        return _read_keys(self.credentials_file, f"sites[{self.name}].credentials_file")

    def admin_credentials(self) -> tuple[str, str]:
        if self.admin_credentials_file is None:
            return self.credentials()
        return _read_keys(self.admin_credentials_file, f"sites[{self.name}].admin_credentials_file")


def _keys_or_problem(path: Path) -> tuple[str, str] | str:
    """The (access, secret) key pair of a credentials file, or what is wrong with it and the fix."""
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        return f"{path}: cannot be read ({err.strerror}); point it at the site's JSON credentials file"
    except ValueError as err:
        return f'{path}: not JSON ({err}); write {{"access_key": ..., "secret_key": ...}}'
    keys = (data.get("access_key"), data.get("secret_key")) if isinstance(data, dict) else (None, None)
    if not all(isinstance(k, str) and k for k in keys):
        return f'{path}: need JSON {{"access_key": ..., "secret_key": ...}} (two non-empty strings)'
    return keys


def _read_keys(path: Path, field: str) -> tuple[str, str]:
    keys = _keys_or_problem(path)
    if isinstance(keys, str):
        raise ConfigError([(field, keys)], WHAT)
    return keys


class DrConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sites: list[SiteS3] = Field(min_length=1)
    primary: str
    kek_file: Path | None = None  # None: the KEK comes from $SOVCLOUD_DR_KEK
    signing_key_file: Path | None = None  # only the backup side needs it
    verify_key_file: Path
    staging_dir: Path
    part_size_mib: int = 8
    retention: Retention = Field(default_factory=Retention, validate_default=True)
    rpo_seconds: int = Field(default=86400, gt=0)
    rto_seconds: int = Field(default=3600, gt=0)
    # The stack's allowed countries (infra/site_backups.py writes them with each site's country): with either
    # given, every site's country must be one of them (SC-DATA-01, the stack's rule: policies/rules.py).
    allowed_countries: list[str] | None = Field(default=None, validate_default=True)

    @field_validator("part_size_mib")
    @classmethod
    def _part_size(cls, v: int) -> int:
        low, high = PART_SIZE_MIB
        if not low <= v <= high:
            raise ValueError(f"{v} MiB is outside {low}..{high}: S3 refuses a part below {low} MiB (but the "
                             "last), and a bigger part only needs more memory; set it to 8, the default")
        return v

    # Checks across fields run as soon as the fields they read parse (common.config.collect), so they come in
    # one report with the fields' own problems.
    @field_validator("sites")
    @classmethod
    def _distinct_sites(cls, sites: list[SiteS3], info: ValidationInfo) -> list[SiteS3]:
        problems: list[tuple[str, str]] = []
        names = [s.name for s in sites]
        stores: dict[tuple[str, str], int] = {}
        for i, s in enumerate(sites):
            if (first := names.index(s.name)) < i:
                problems.append((f"sites[{i}].name", f"{s.name!r} is also sites[{first}].name: give each site "
                                 "its own name"))
            # Two entries for one bucket are one copy, not two: a site lost takes both "replicas" with it.
            store = (s.endpoint.rstrip("/"), s.bucket)
            if store in stores:
                problems.append((f"sites[{i}].endpoint", f"{s.endpoint} bucket {s.bucket} is also "
                                 f"sites[{stores[store]}]'s: each site's backups go to that site's own S3"))
            stores.setdefault(store, i)
        collect(info, problems)
        return sites

    @field_validator("primary")
    @classmethod
    def _primary_is_a_site(cls, primary: str, info: ValidationInfo) -> str:
        if "sites" in info.data and primary not in (names := [s.name for s in info.data["sites"]]):
            collect(info, [("primary", f"{primary!r} is not one of sites[].name {names}; name the site whose "
                            "backups are made first")])
        return primary

    @field_validator("retention")
    @classmethod
    def _locked_while_kept(cls, retention: Retention, info: ValidationInfo) -> Retention:
        # Backups are locked for at least as long as the policy may keep them: prune can only remove a
        # version once its lock ends, and a backup the policy keeps must not be deletable before that.
        need, tier = retention.horizon()
        for i, s in enumerate(info.data.get("sites", [])):
            if s.object_lock_retain_days is None:
                s.object_lock_retain_days = retention.horizon_days()
            elif s.object_lock_retain_days < need:
                collect(info, [(
                    f"sites[{i}].object_lock_retain_days",
                    f"{s.object_lock_retain_days} days is shorter than "
                    f"the retention policy keeps a backup ({tier}: up to {need} days); set it to at least {need}, "
                    "or leave it out to derive it from retention",
                )])
        return retention

    @field_validator("allowed_countries")
    @classmethod
    def _resident(cls, allowed: list[str] | None, info: ValidationInfo) -> list[str] | None:
        sites = info.data.get("sites", [])
        if allowed is not None or any(s.country for s in sites):
            collect(info, [(f"sites[{i}].country", f"{p} (set it, and allowed_countries, as the stack writes them)")
                           for i, s in enumerate(sites) for p in rules.residency(s.country, allowed)])
        return allowed

    @model_validator(mode="after")
    def _report(self, info: ValidationInfo) -> DrConfig:
        raise_collected(info)
        return self

    def site(self, name: str) -> SiteS3:
        for s in self.sites:
            if s.name == name:
                return s
        raise ConfigError([("sites[].name", f"site {name!r} not in the DR config; known: "
                                            f"{[s.name for s in self.sites]}")], WHAT)

    def ordered_sites(self) -> list[SiteS3]:
        """Primary first, then the replicas."""
        return sorted(self.sites, key=lambda s: s.name != self.primary)

    @property
    def part_size(self) -> int:
        return self.part_size_mib << 20


def load_config(path: Path | str) -> DrConfig:
    path = Path(path)
    cfg = load_yaml_file(path, DrConfig, WHAT)
    # Relative paths are relative to the config file, so a config dir is self-contained.
    base = path.parent

    def rel(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    cfg.kek_file, cfg.signing_key_file = rel(cfg.kek_file), rel(cfg.signing_key_file)
    cfg.verify_key_file, cfg.staging_dir = rel(cfg.verify_key_file), rel(cfg.staging_dir)
    for s in cfg.sites:
        s.credentials_file = rel(s.credentials_file)
        s.admin_credentials_file = rel(s.admin_credentials_file)
    if problems := file_problems(cfg):
        raise ConfigError(problems, f"{WHAT} {path}")
    return cfg


def file_problems(cfg: DrConfig) -> list[tuple[str, str]]:
    """What is wrong with the files the config names (keys, credentials, staging dir), each at its field: a job
    must not get as far as a bucket with keys it cannot read."""
    problems: list[tuple[str, str]] = []
    for i, s in enumerate(cfg.sites):
        for field in ("credentials_file", "admin_credentials_file"):
            if (file := getattr(s, field)) is not None and isinstance(keys := _keys_or_problem(file), str):
                problems.append((f"sites[{i}].{field}", keys))
    for field in ("kek_file", "signing_key_file", "verify_key_file"):
        file = getattr(cfg, field)
        if file is not None and not file.is_file():
            why = "is not a file" if file.exists() else "does not exist"
            problems.append((field, f"{file} {why}; point it at the key `python -m dr keygen` wrote"))
    if cfg.staging_dir.exists() and not cfg.staging_dir.is_dir():
        problems.append(("staging_dir", f"{cfg.staging_dir} is not a directory; point it at a directory (it is "
                         "created when missing)"))
    return problems
