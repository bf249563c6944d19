"""The backup store's layout and the documents in it, in one place.

Every site's S3 endpoint holds one bucket, `sovcloud-backups`:

    backups/<origin site>/<dataset>/<stamp>/<part>.enc     a backup's encrypted parts
    backups/<origin site>/<dataset>/<stamp>/manifest.json  its signed manifest, written last
    drills/<site>/latest.json                              the site's newest restore-drill result
    drills/<site>/history/<stamp>.json                     every drill result

`<stamp>` is the backup's UTC creation time, `YYYYmmddTHHMMSSZ`, so names sort by time. A prefix without a
manifest is an interrupted upload, never a backup.

dr/ writes these; the backup and drill exporters (monitoring/exporters, which ship this module with them)
and the evidence adapters (policies/evidence) read them. A new manifest or drill-result field is added to
the model here, and every reader sees it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from common.config import problems_of

BUCKET = "sovcloud-backups"
BACKUPS = "backups/"
DRILLS = "drills/"
MANIFEST = "manifest.json"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


# --- keys ---------------------------------------------------------------------------------------------------

def stamp(when: datetime) -> str:
    """The stamp of a UTC time (a naive time is taken as UTC)."""
    return (when.astimezone(UTC) if when.tzinfo else when).strftime(STAMP_FORMAT)


def parse_stamp(text: str) -> datetime | None:
    """The UTC time a stamp names, or None when `text` is not a stamp (then it is not a backup's prefix)."""
    try:
        return datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def dataset_prefix(origin: str, dataset: str) -> str:
    return f"{BACKUPS}{origin}/{dataset}/"


def backup_prefix(origin: str, dataset: str, ts: str) -> str:
    return f"{dataset_prefix(origin, dataset)}{ts}/"


def manifest_key(origin: str, dataset: str, ts: str) -> str:
    return backup_prefix(origin, dataset, ts) + MANIFEST


def part_key(origin: str, dataset: str, ts: str, part: str) -> str:
    return backup_prefix(origin, dataset, ts) + part + ".enc"


def is_manifest_key(key: str) -> bool:
    return key.startswith(BACKUPS) and key.endswith("/" + MANIFEST)


def stamp_of(key: str, origin: str, dataset: str) -> str | None:
    """The stamp of a key under the dataset's prefix, or None when the key is not inside a backup."""
    pre = dataset_prefix(origin, dataset)
    if not key.startswith(pre):
        return None
    ts = key[len(pre):].split("/", 1)[0]
    return ts if parse_stamp(ts) else None


def origin_and_dataset(key: str) -> tuple[str, str] | None:
    """(origin, dataset) of an object inside a backup (backups/<origin>/<dataset>/<stamp>/<object>)."""
    parts = key.split("/")
    if len(parts) >= 5 and key.startswith(BACKUPS) and parse_stamp(parts[3]):
        return parts[1], parts[2]
    return None


def drill_latest_key(site: str) -> str:
    return f"{DRILLS}{site}/latest.json"


def drill_history_key(site: str, ts: str) -> str:
    return f"{DRILLS}{site}/history/{ts}.json"


# --- documents ----------------------------------------------------------------------------------------------

class BadDocument(ValueError):
    """A manifest or drill result that does not have the shape below; the message names where and the field."""


def rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """An RFC 3339 UTC time ('...Z' or '+00:00'), as the documents here write it."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def epoch(text: str) -> float:
    return parse_time(text).timestamp()


class _Document(BaseModel):
    # Readers accept fields they do not know (a newer writer), so adding one never breaks a running exporter.
    model_config = ConfigDict(extra="allow")

    @classmethod
    def parse(cls, raw: bytes | str | dict, where: str):
        """The document, or BadDocument naming `where` and every field that is wrong."""
        try:
            doc = raw if isinstance(raw, dict) else json.loads(raw)
        except ValueError as err:
            raise BadDocument(f"{where}: not JSON ({err})") from None
        try:
            return cls.model_validate(doc)
        except ValidationError as err:
            problems = "; ".join(f"{field}: {message}" for field, message in problems_of(err))
            raise BadDocument(f"{where}: {cls.__doc__.splitlines()[0].rstrip('.').lower()}: {problems}") from None


def _rfc3339(value: str | None) -> str | None:
    if value is not None:
        epoch(value)  # a ValueError on anything that is not an RFC 3339 time
    return value


class ManifestObject(_Document):
    """A backup part as its manifest lists it."""

    key: str
    name: str
    kind: str
    sha256: str
    size: int = Field(ge=0)
    plaintext_sha256: str
    plaintext_size: int = Field(ge=0)
    wrapped_key: str


class Manifest(_Document):
    """A backup manifest.

    Signed (dr/crypto.py) over its canonical JSON, so it is read as a model and verified as the dict it came
    from (`model_dump(exclude_unset=True)` gives that dict back)."""

    format: int = 1
    site: str
    dataset: str
    timestamp: str
    created: str
    source: dict[str, Any] = Field(default_factory=dict)
    sentinel: dict[str, Any] | None = None
    encryption: dict[str, Any]
    objects: list[ManifestObject] = Field(min_length=1)
    signature: dict[str, str] | None = None  # {"alg": "Ed25519", "value": base64}; None before signing

    _created = field_validator("created")(_rfc3339)

    @property
    def created_epoch(self) -> float:
        return epoch(self.created)

    @property
    def key(self) -> str:
        return manifest_key(self.site, self.dataset, self.timestamp)


class DrillCheck(_Document):
    """One check a drill proved (its name is a `drill` check of policies/controls.yaml)."""

    name: str
    ok: StrictBool
    detail: str | None = None


class DrillResult(_Document):
    """A restore-drill result.

    Written by `python -m dr drill` to drills/<site>/latest.json; read by the drill exporter and the evidence
    bundle's drill layer."""

    site: str
    ok: StrictBool
    dataset: str | None = None
    started: str | None = None
    finished: str | None = None
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    error: str | None = None
    restored_from: str | None = None
    replicated_to: list[str] | None = None
    rto_target: int | None = None
    rpo_target: int | None = None
    details: dict[str, Any] | None = None  # what the restore reported (objects, retries, restored keys)
    checks: list[DrillCheck] | None = None

    _times = field_validator("started", "finished")(_rfc3339)

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=1).encode()


# --- reading a store (dr/store.py) --------------------------------------------------------------------------

def backup_stamps(store, origin: str, dataset: str) -> list[str]:
    """The stamps of the dataset's complete backups (those with a manifest) in `store`, oldest first."""
    return sorted(ts for key in store.keys(dataset_prefix(origin, dataset))
                  if key.endswith("/" + MANIFEST) and (ts := stamp_of(key, origin, dataset)))


def read_drill(store, site: str) -> DrillResult | None:
    """The site's latest drill result in `store` (None: none there), or BadDocument."""
    raw = store.get(drill_latest_key(site))
    if raw is None:
        return None
    result = DrillResult.parse(raw, f"{store.name}:{drill_latest_key(site)}")
    if result.site != site:
        raise BadDocument(f"{store.name}:{drill_latest_key(site)}: names site {result.site!r}, not {site!r}")
    return result
