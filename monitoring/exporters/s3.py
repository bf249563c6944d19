"""Read-only S3 access for the backup and drill exporters (boto3 is blocking: run it in a thread)."""

from __future__ import annotations

import boto3
from botocore.config import Config

from monitoring.exporters.config import S3Store


def client(store: S3Store, timeout: float):
    access, secret = store.credentials()
    # One attempt with short timeouts: the exporter's own interval is the retry.
    cfg = Config(connect_timeout=timeout, read_timeout=timeout,
                 retries={"max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=str(store.endpoint_url).rstrip("/"), region_name=store.region,
                        aws_access_key_id=access, aws_secret_access_key=secret, config=cfg)


def common_prefixes(s3, bucket: str, prefix: str) -> list[str]:
    """The 'directories' right under prefix (names only, without the prefix or the trailing slash)."""
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for cp in page.get("CommonPrefixes", []):
            out.append(cp["Prefix"][len(prefix):].rstrip("/"))
    return out
