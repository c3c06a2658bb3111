"""Items: details, thumbnails (cached) and the original image for the large view.

Items are addressed by id only. The file behind an id is whatever an embed run recorded for it,
so no request can name a path, inside the workspace or out of it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse

from corral.api.deps import Ctx, Reader
from corral.api.inputs import Int64
from corral.api.itemindex import check_item_id
from corral.api.redact import sees_paths
from corral.api.routes.common import IMMUTABLE, file_or_bytes

router = APIRouter(prefix="/api/items", tags=["items"])


@router.get("/{item_id}", summary="An item's file name and size (and, for those who may run jobs, its source)")
def item(item_id: str, ctx: Ctx, user: Reader) -> dict[str, Any]:
    """A viewer sees the file name, not where the file lies on the server; curators and admins, who
    start jobs on the server's folders, see the recorded source as well."""
    info = ctx.items.info(item_id)
    if not sees_paths(user):
        info.pop("uri", None)
    return info


@router.get("/{item_id}/thumb", summary="A JPEG thumbnail (made once, then cached)", response_class=FileResponse)
def thumb(item_id: str, ctx: Ctx, user: Reader, size: Int64 | None = None):
    return file_or_bytes(ctx.thumbs.thumb(check_item_id(item_id), size), media_type="image/jpeg", headers={"Cache-Control": IMMUTABLE})


@router.get("/{item_id}/image", summary="The original image", response_class=FileResponse)
def image(item_id: str, ctx: Ctx, user: Reader):
    check_item_id(item_id)
    headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'"}
    crop_view = ctx.thumbs.crop_view(item_id)  # a detector crop opens as its parent image with the box drawn
    if crop_view is not None:
        return file_or_bytes(crop_view, media_type="image/jpeg", headers=headers)
    data = ctx.thumbs.original_bytes(item_id)  # verified: still the embedded bytes, reached without a symlink
    return Response(data, media_type=sniff_image_type(data), headers=headers)


def sniff_image_type(data: bytes) -> str:
    """The image type from the first bytes (S3 objects carry no trustworthy name)."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM":
        return "image/bmp"
    return "application/octet-stream"
