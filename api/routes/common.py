"""Helpers shared by the route modules: compressed binary answers with validators."""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import FileResponse

IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"


def gzip_response(request: Request, body_gz: bytes, *, etag: str | None, cache: str, media_type: str = "application/octet-stream") -> Response:
    """Send pre-compressed bytes: as-is to clients that accept gzip, inflated to others; 304 on a
    matching ``If-None-Match``."""
    headers = {"Cache-Control": cache, "Vary": "Accept-Encoding, Authorization, Cookie"}
    if etag:
        headers["ETag"] = f'"{etag}"'
        if request.headers.get("if-none-match", "").strip() in (f'"{etag}"', f'W/"{etag}"'):
            return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        headers["Content-Encoding"] = "gzip"
        return Response(body_gz, media_type=media_type, headers=headers)
    return Response(gzip.decompress(body_gz), media_type=media_type, headers=headers)


def file_or_bytes(made: Path | bytes, *, media_type: str, headers: Mapping[str, str]) -> Response:
    """A cached file, or the bytes made for this request when the cache could not be written."""
    if isinstance(made, Path):
        return FileResponse(made, media_type=media_type, headers=dict(headers))
    return Response(made, media_type=media_type, headers=dict(headers))
