"""Where the layout's documents are read from: a `Store` is one site's backup bucket, seen as keys and bytes.

`S3Bucket` is the real one (any boto3 S3 client: dr's, or the exporters' with their short timeouts);
`MemoryBucket` holds the same keys in a dict, so the readers of the layout (dr/layout.py) are tested and
benchmarked without an S3 server. What needs S3 itself (multipart resume, object lock, versions) stays in
dr/s3io.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from botocore.exceptions import ClientError

_MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")  # no bucket yet: no key either


class Store(Protocol):
    name: str  # the site whose store this is

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under prefix, in key order."""

    def children(self, prefix: str) -> list[str]:
        """The names right below prefix ('directories' of a '/'-separated key space), without the slash."""

    def get(self, key: str) -> bytes | None:
        """The current bytes of key, None when there is no such key."""

    def size(self, key: str) -> int | None:
        """The size of key, None when there is no such key."""

    def put(self, key: str, body: bytes) -> None: ...


class S3Bucket:
    def __init__(self, name: str, client, bucket: str) -> None:
        self.name, self.client, self.bucket = name, client, bucket

    def keys(self, prefix: str) -> Iterator[str]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                yield o["Key"]

    def children(self, prefix: str) -> list[str]:
        out: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix,
                                                                     Delimiter="/")
        for page in pages:
            out += [cp["Prefix"][len(prefix):].rstrip("/") for cp in page.get("CommonPrefixes", [])]
        return out

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise

    def size(self, key: str) -> int | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)


class MemoryBucket:
    def __init__(self, name: str, objects: dict[str, bytes] | None = None) -> None:
        self.name, self.objects = name, dict(objects or {})

    def keys(self, prefix: str) -> Iterator[str]:
        yield from sorted(k for k in self.objects if k.startswith(prefix))

    def children(self, prefix: str) -> list[str]:
        return sorted({k[len(prefix):].split("/", 1)[0] for k in self.keys(prefix) if "/" in k[len(prefix):]})

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def size(self, key: str) -> int | None:
        body = self.objects.get(key)
        return None if body is None else len(body)

    def put(self, key: str, body: bytes) -> None:
        self.objects[key] = body
