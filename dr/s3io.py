"""S3 access for one site: bucket set-up with capability probing, resumable multipart uploads."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dr.config import SiteS3

S3Error = (BotoCoreError, ClientError)


def client(site: SiteS3):
    access, secret = site.credentials()
    # Short timeouts and few retries: a dead site must be noticed in seconds so the other site proceeds.
    cfg = Config(
        s3={"addressing_style": "path"},
        connect_timeout=3,
        read_timeout=60,
        retries={"max_attempts": 2, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
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


@dataclass
class BucketReport:
    """What the server supports, as probed (SeaweedFS support for these varies by version)."""

    site: str
    created: bool = False
    versioning: str = "unknown"  # Enabled | unsupported: <error>
    object_lock: str = "unknown"  # Enabled (GOVERNANCE n days) | Enabled (no default retention) | off | ...
    notes: list[str] = field(default_factory=list)


def ensure_bucket(s3, site: SiteS3) -> BucketReport:
    rep = BucketReport(site.name)
    try:
        s3.head_bucket(Bucket=site.bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        # Object lock can only be switched on at creation: ask for it, fall back if refused.
        try:
            s3.create_bucket(Bucket=site.bucket, ObjectLockEnabledForBucket=True)
        except ClientError as lock_err:
            rep.notes.append(f"create with object lock refused ({error_text(lock_err)}); created without")
            s3.create_bucket(Bucket=site.bucket)
        rep.created = True
    try:
        s3.put_bucket_versioning(Bucket=site.bucket, VersioningConfiguration={"Status": "Enabled"})
        got = s3.get_bucket_versioning(Bucket=site.bucket).get("Status", "")
        rep.versioning = got if got == "Enabled" else f"unsupported: status {got!r} after enabling"
    except ClientError as err:
        rep.versioning = f"unsupported: {error_text(err)}"
    try:
        lock = s3.get_object_lock_configuration(Bucket=site.bucket).get("ObjectLockConfiguration", {})
        enabled = lock.get("ObjectLockEnabled") == "Enabled"
    except ClientError as err:
        enabled, rep.object_lock = False, f"off ({error_text(err)})"
    if enabled:
        rep.object_lock = "Enabled (no default retention)"
        if site.object_lock_days:
            try:
                s3.put_object_lock_configuration(
                    Bucket=site.bucket,
                    ObjectLockConfiguration={
                        "ObjectLockEnabled": "Enabled",
                        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": site.object_lock_days}},
                    },
                )
                rep.object_lock = f"Enabled (GOVERNANCE {site.object_lock_days} days)"
            except ClientError as err:
                rep.notes.append(f"default retention refused: {error_text(err)}")
    return rep


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


def object_sha256(s3, bucket: str, key: str) -> str | None:
    """The sha256 recorded in the object's metadata at upload, or None if absent."""
    try:
        return s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get("sha256")
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


@dataclass
class UploadResult:
    key: str
    skipped: bool = False  # already complete at the target
    parts_reused: int = 0  # parts found from an interrupted upload
    parts_sent: int = 0


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
    resumed upload sends only what is missing. `on_part(n)` runs after each part is sent.
    """
    res = UploadResult(key)
    if object_sha256(s3, bucket, key) == sha256:
        res.skipped = True
        return res
    upload_id = _existing_upload(s3, bucket, key)
    have = _parts(s3, bucket, key, upload_id) if upload_id else {}
    if upload_id is None:
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"sha256": sha256})["UploadId"]
    done = []
    with open(path, "rb") as f:
        n = 0
        while True:
            data = f.read(part_size)
            if not data and n > 0:
                break
            n += 1
            etag = _md5(data)
            old = have.get(n)
            if old is not None and old["ETag"].strip('"') == etag and old["Size"] == len(data):
                res.parts_reused += 1
            else:
                s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=data)
                res.parts_sent += 1
                if on_part:
                    on_part(n)
            done.append({"PartNumber": n, "ETag": f'"{etag}"'})
            if len(data) < part_size:
                break
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done})
    return res


def put_small(s3, bucket: str, key: str, body: bytes, content_type: str = "application/json") -> None:
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ContentType=content_type,
        Metadata={"sha256": hashlib.sha256(body).hexdigest()},
    )


def download(s3, bucket: str, key: str, dst: BinaryIO) -> tuple[str, int]:
    """Stream an object into dst; returns (sha256, size) of the bytes received."""
    h, size = hashlib.sha256(), 0
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    for chunk in body.iter_chunks(1 << 20):
        h.update(chunk)
        size += len(chunk)
        dst.write(chunk)
    return h.hexdigest(), size


def get_bytes(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def list_keys(s3, bucket: str, prefix: str) -> Iterator[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            yield o["Key"]
