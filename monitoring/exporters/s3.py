"""Read-only S3 access for the backup and drill exporters (boto3 is blocking: run it in a thread)."""

from __future__ import annotations

import boto3
from botocore.config import Config

from dr.store import S3Bucket
from monitoring.exporters.config import S3Store


def client(store: S3Store, timeout: float):
    access, secret = store.credentials()
    # One attempt with short timeouts: the exporter's own interval is the retry.
    cfg = Config(connect_timeout=timeout, read_timeout=timeout,
                 retries={"max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=str(store.endpoint_url).rstrip("/"), region_name=store.region,
                        aws_access_key_id=access, aws_secret_access_key=secret, config=cfg)


def bucket(store: S3Store, timeout: float) -> S3Bucket:
    """The store's bucket, read with the exporter's short timeouts (dr/store.py)."""
    return S3Bucket(store.site, client(store, timeout), store.bucket)
