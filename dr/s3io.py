"""S3 access for one site: the bucket's object lock (checked, and set up with the admin keys), resumable
multipart uploads, the lock of each written version, older versions for restores."""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dr.config import SiteS3


class LockError(Exception):
    """A bucket or an object version is not locked as the DR config requires; the message says how to fix it."""


S3Error = (BotoCoreError, ClientError, LockError)
# Parts (ranges) of one object in flight at once, each in its own thread and connection: S3 throughput comes
# from parallel requests, and this bounds the memory of a transfer at CONCURRENCY parts.
CONCURRENCY = 10  # boto3's own transfer default
# The range of one GET when an object is downloaded in parallel (boto3's own transfer default too).
RANGE = 8 << 20
# Host and S3 server clocks may differ: a version's lock may end this much earlier than the host expects.
CLOCK_SKEW = timedelta(hours=1)


def client(site: SiteS3):
    """The backup writer's client (credentials_file)."""
    return _client(site, *site.credentials())


def admin_client(site: SiteS3):
    """The client for bucket set-up and pruning (admin_credentials_file, else credentials_file)."""
    return _client(site, *site.admin_credentials())


def _client(site: SiteS3, access: str, secret: str):
    # Short timeouts and few retries: a dead site must be noticed in seconds so the other site proceeds.
    cfg = Config(
        s3={"addressing_style": "path"},
        connect_timeout=3,
        read_timeout=60,
        retries={"max_attempts": 2, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=CONCURRENCY + 2,  # every transfer thread keeps its connection
    )
    return boto3.client(
        "s3",
        endpoint_url=site.endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name=site.region,
        config=cfg,
    )


def error_text(err: Exception) -> str:
    if isinstance(err, ClientError):
        e = err.response.get("Error", {})
        return f"{e.get('Code', '?')}: {e.get('Message', '')}".strip()
    return f"{type(err).__name__}: {err}"


def error_code(err: Exception) -> str | None:
    return err.response.get("Error", {}).get("Code") if isinstance(err, ClientError) else None


@dataclass
class BucketReport:
    """The site's bucket as found (and, with the admin keys, set up)."""

    site: str
    created: bool = False
    versioning: str = "unknown"  # Enabled | Suspended | off
    object_lock: str = "unknown"  # Enabled (COMPLIANCE n days)
    notes: list[str] = field(default_factory=list)


def default_retention(s3, bucket: str) -> tuple[bool, str | None, int]:
    """(object lock enabled, default retention mode, default retention days) of a bucket."""
    try:
        lock = s3.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration", {})
    except ClientError as err:
        if error_code(err) in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"):
            return False, None, 0
        raise
    rule = lock.get("Rule", {}).get("DefaultRetention", {})
    return lock.get("ObjectLockEnabled") == "Enabled", rule.get("Mode"), rule.get("Days") or 365 * rule.get("Years", 0)


def ensure_bucket(s3, site: SiteS3, admin=None) -> BucketReport:
    """Check that the site's bucket locks every new version in COMPLIANCE mode for at least
    site.object_lock_retain_days; with `admin` (a client with the admin keys) create it or raise its default
    retention first. The writer's keys only read the settings. Raises LockError naming the fix."""
    days = site.object_lock_retain_days
    where = f"bucket {site.bucket} at {site.name} ({site.endpoint})"
    rep = BucketReport(site.name)
    try:
        s3.head_bucket(Bucket=site.bucket)
    except ClientError as err:
        if error_code(err) in ("403", "AccessDenied"):
            raise LockError(
                f"{where}: access denied to these keys (sites[{site.name}].credentials_file): wrong keys for this "
                "site, or keys for another bucket"
            ) from None
        if error_code(err) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        if admin is None:
            fix = "create it with the admin keys (`python -m dr init-buckets`)"
            raise LockError(f"{where} does not exist: {fix}") from None
        try:
            # Object lock can only be switched on when the bucket is created; it turns versioning on for good.
            admin.create_bucket(Bucket=site.bucket, ObjectLockEnabledForBucket=True)
        except ClientError as cerr:
            raise LockError(
                f"{where}: creating it with object lock failed ({error_text(cerr)}): set "
                f"sites[{site.name}].admin_credentials_file to keys that may create buckets"
            ) from None
        rep.created = True
    rep.versioning = s3.get_bucket_versioning(Bucket=site.bucket).get("Status") or "off"
    enabled, mode, have = default_retention(s3, site.bucket)
    if not enabled:
        raise LockError(
            f"{where} has no object lock, and S3 can only enable it when a bucket is created: create a new "
            f"bucket with `python -m dr init-buckets` (sites[{site.name}].bucket names it) and copy the backups "
            "there with `python -m dr sync`"
        )
    if (mode != "COMPLIANCE" or have < days) and admin is not None:
        try:
            admin.put_object_lock_configuration(
                Bucket=site.bucket,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}},
                },
            )
            rep.notes.append(f"default retention was {mode or 'none'} {have} days; set to COMPLIANCE {days} days")
            mode, have = "COMPLIANCE", days
        except ClientError as err:
            rep.notes.append(f"raising the default retention was refused: {error_text(err)}")
    if mode != "COMPLIANCE" or have < days:
        raise LockError(
            f"{where} locks new versions {mode or 'not at all'}{f' for {have} days' if mode else ''}; the DR config "
            f"needs COMPLIANCE for at least {days} days (sites[{site.name}].object_lock_retain_days): set it with "
            "the admin keys (`python -m dr init-buckets`)"
        )
    rep.object_lock = f"Enabled (COMPLIANCE {have} days)"
    return rep


def check_locked(s3, bucket: str, key: str, version_id: str | None, not_before: datetime) -> datetime:
    """The retain-until date of a version, which must be locked in COMPLIANCE mode until not_before or later."""
    kw = {"VersionId": version_id} if version_id else {}
    head = s3.head_object(Bucket=bucket, Key=key, **kw)
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    if mode != "COMPLIANCE" or until is None or until < not_before:
        raise LockError(
            f"{bucket}/{key} (version {head.get('VersionId') or version_id}) is locked {mode or 'not at all'}"
            f"{f' until {until:%Y-%m-%d %H:%M}' if until else ''}; it must be COMPLIANCE until "
            f"{not_before:%Y-%m-%d %H:%M} or later: fix the bucket's default retention (`python -m dr init-buckets`)"
        )
    return until


def lock_deadline(site: SiteS3, since: datetime) -> datetime:
    """The earliest acceptable retain-until of a version written at `since` (minus the clock skew allowed)."""
    return since + timedelta(days=site.object_lock_retain_days) - CLOCK_SKEW


def utcnow() -> datetime:
    return datetime.now(UTC)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()  # S3 part ETag, not a security check


def _existing_upload(s3, bucket: str, key: str) -> str | None:
    resp = s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    ups = [u for u in resp.get("Uploads", []) if u["Key"] == key]
    ups.sort(key=lambda u: u["Initiated"])
    return ups[-1]["UploadId"] if ups else None


def _parts(s3, bucket: str, key: str, upload_id: str) -> dict[int, dict]:
    out: dict[int, dict] = {}
    marker = 0
    while True:
        resp = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker)
        for p in resp.get("Parts", []):
            out[p["PartNumber"]] = p
        if not resp.get("IsTruncated"):
            return out
        marker = int(resp["NextPartNumberMarker"])


def head(s3, bucket: str, key: str) -> dict | None:
    """The current version's HEAD, or None if there is none."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if error_code(err) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def object_sha256(s3, bucket: str, key: str) -> str | None:
    """The sha256 recorded in the object's metadata at upload, or None if absent."""
    h = head(s3, bucket, key)
    return None if h is None else h.get("Metadata", {}).get("sha256")


@dataclass
class UploadResult:
    key: str
    skipped: bool = False  # already complete at the target
    parts_reused: int = 0  # parts found from an interrupted upload
    parts_sent: int = 0
    version_id: str | None = None  # the version written (or found, when skipped)
    locked_until: str | None = None  # its COMPLIANCE retain-until (set by the caller that checked it)


def upload_file(
    s3,
    bucket: str,
    key: str,
    path: Path,
    sha256: str,
    part_size: int,
    on_part: Callable[[int], None] | None = None,
) -> UploadResult:
    """Multipart upload of `path` that resumes an interrupted upload of the same key.

    Parts already at the server are reused when their ETag equals the MD5 of the local part, so a
    resumed upload sends only what is missing (the whole object is checked by the caller's read-back). Up
    to CONCURRENCY parts are read and sent at once (memory: CONCURRENCY x part_size). `on_part(n)` runs
    after part n is sent, in this thread; when it raises, the parts not started yet are not sent (those
    already sent stay, for a resume).
    """
    res = UploadResult(key)
    h = head(s3, bucket, key)
    if h is not None and h.get("Metadata", {}).get("sha256") == sha256:
        res.skipped, res.version_id = True, h.get("VersionId")
        return res
    upload_id = _existing_upload(s3, bucket, key)
    have = _parts(s3, bucket, key, upload_id) if upload_id else {}
    if upload_id is None:
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"sha256": sha256})["UploadId"]
    size = path.stat().st_size
    count = max(1, -(-size // part_size))  # an empty file is one empty part
    etags: dict[int, str] = {}
    fd = os.open(path, os.O_RDONLY)

    def send(n: int) -> bool:
        """Part n: True when sent, False when the server already holds it."""
        data = os.pread(fd, part_size, (n - 1) * part_size)
        old = have.get(n)
        if old is not None and old["Size"] == len(data) and old["ETag"].strip('"') == _md5(data):
            etags[n] = old["ETag"]
            return False
        etags[n] = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=data)["ETag"]
        return True

    try:
        with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="s3-put") as pool:
            running: dict[Future, int] = {}
            try:
                for n in range(1, count + 1):
                    while len(running) >= CONCURRENCY:
                        _note_sent(res, running, on_part, wait(running, return_when=FIRST_COMPLETED).done)
                    running[pool.submit(send, n)] = n
                while running:
                    _note_sent(res, running, on_part, wait(running, return_when=FIRST_COMPLETED).done)
            finally:
                for fut in running:  # a failure: nothing new starts; what is in flight finishes or fails
                    fut.cancel()
    finally:
        os.close(fd)
    done_resp = s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in range(1, count + 1)]},
    )
    res.version_id = done_resp.get("VersionId")
    return res


def _note_sent(res: UploadResult, running: dict, on_part, done) -> None:
    for fut in sorted(done, key=running.__getitem__):
        n = running.pop(fut)
        if fut.result():
            res.parts_sent += 1
            if on_part:
                on_part(n)
        else:
            res.parts_reused += 1


def put_small(s3, bucket: str, key: str, body: bytes, content_type: str = "application/json") -> str | None:
    """Put a small object; returns the version id written."""
    return s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ContentType=content_type,
        Metadata={"sha256": hashlib.sha256(body).hexdigest()},
    ).get("VersionId")


def put_once(s3, bucket: str, key: str, body: bytes) -> UploadResult:
    """put_small unless the current version already holds these bytes (a re-push adds no locked version)."""
    h = head(s3, bucket, key)
    if h is not None and h.get("Metadata", {}).get("sha256") == hashlib.sha256(body).hexdigest():
        return UploadResult(key, skipped=True, version_id=h.get("VersionId"))
    return UploadResult(key, parts_sent=1, version_id=put_small(s3, bucket, key, body))


def download(s3, bucket: str, key: str, dst: BinaryIO, version_id: str | None = None) -> tuple[str, int]:
    """Stream an object (the current version, or version_id) into dst; returns (sha256, size) received.

    An object larger than RANGE is fetched as ranges of one version, CONCURRENCY at a time, and written to dst
    in order while the next ranges arrive (memory: CONCURRENCY x RANGE)."""
    h, size = hashlib.sha256(), 0
    kw = {"VersionId": version_id} if version_id else {}

    def take(data) -> None:
        nonlocal size
        h.update(data)
        size += len(data)
        dst.write(data)

    meta = s3.head_object(Bucket=bucket, Key=key, **kw)
    total = meta["ContentLength"]
    # Every range from the same version: another writer's newer version must not be mixed in.
    if meta.get("VersionId") and meta["VersionId"] != "null":
        kw = {"VersionId": meta["VersionId"]}
    elif meta.get("ETag"):
        kw = {"IfMatch": meta["ETag"]}
    if total <= RANGE:
        for chunk in s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].iter_chunks(1 << 20):
            take(chunk)
        return h.hexdigest(), size

    def get(offset: int) -> bytes:
        end = min(offset + RANGE, total) - 1
        return s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{end}", **kw)["Body"].read()

    with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="s3-get") as pool:
        offsets = iter(range(0, total, RANGE))
        window: deque[Future] = deque(pool.submit(get, o) for o in islice(offsets, CONCURRENCY))
        try:
            while window:
                data = window.popleft().result()
                if (nxt := next(offsets, None)) is not None:
                    window.append(pool.submit(get, nxt))
                take(data)
        finally:
            for fut in window:
                fut.cancel()
    return h.hexdigest(), size


def get_bytes(s3, bucket: str, key: str, version_id: str | None = None) -> bytes:
    kw = {"VersionId": version_id} if version_id else {}
    return s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


def list_keys(s3, bucket: str, prefix: str) -> Iterator[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            yield o["Key"]


def list_versions(s3, bucket: str, prefix: str) -> Iterator[dict]:
    """Every version and delete marker under prefix: {"Key", "VersionId", "IsLatest", "LastModified",
    "DeleteMarker": bool}."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            yield {**v, "DeleteMarker": False}
        for v in page.get("DeleteMarkers", []):
            yield {**v, "DeleteMarker": True}


def older_versions(s3, bucket: str, key: str) -> list[str]:
    """The version ids of `key` other than the current one, newest first (delete markers left out)."""
    vs = [v for v in list_versions(s3, bucket, key) if v["Key"] == key and not v["DeleteMarker"] and not v["IsLatest"]]
    return [v["VersionId"] for v in sorted(vs, key=lambda v: v["LastModified"], reverse=True)]


def version_lock(s3, bucket: str, key: str, version_id: str) -> tuple[str | None, datetime | None, bool]:
    """(mode, retain-until, legal hold on) of one version."""
    h = s3.head_object(Bucket=bucket, Key=key, VersionId=version_id)
    return h.get("ObjectLockMode"), h.get("ObjectLockRetainUntilDate"), h.get("ObjectLockLegalHoldStatus") == "ON"
