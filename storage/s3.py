"""S3 access shared by ingest, publish and pull.

Endpoint, region and credentials come from the usual AWS settings (environment, ~/.aws); an
explicit ``endpoint_url`` (or ``CORRAL_S3_ENDPOINT_URL``) points at any S3-compatible server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class S3Url:
    bucket: str
    key: str  # may be a prefix, without a leading slash

    @classmethod
    def parse(cls, url: str) -> "S3Url":
        if not url.startswith("s3://"):
            raise ValueError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
        rest = url[5:]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ValueError(f"S3 URL {url!r} has no bucket (expected s3://bucket/prefix)")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def client(endpoint_url: str | None = None, region: str | None = None, *, max_attempts: int = 8) -> Any:
    """A boto3 S3 client with retries turned up; boto3 is imported only here."""
    import boto3
    from botocore.config import Config

    endpoint_url = endpoint_url or os.environ.get("CORRAL_S3_ENDPOINT_URL") or None
    cfg = Config(retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=10, read_timeout=60)
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        # the environment, then ~/.aws/config (the session resolves both), then us-east-1
        region_name=region or os.environ.get("AWS_REGION") or boto3.session.Session().region_name or "us-east-1",
        config=cfg,
    )


def list_objects(s3: Any, url: S3Url) -> list[tuple[str, int]]:
    """All (key, size) under a prefix, sorted by key."""
    return sorted(iter_objects(s3, url))


def iter_objects(s3: Any, url: S3Url) -> Iterator[tuple[str, int]]:
    """(key, size) under a prefix, a page (1,000 keys) at a time, in the order S3 lists them."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=url.bucket, Prefix=url.key):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                yield obj["Key"], int(obj["Size"])
