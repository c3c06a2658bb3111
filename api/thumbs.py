"""Thumbnails and texture atlases, made once from the originals and cached in the workspace.

Per item: ``cache/thumbs/<size>/<id[:2]>/<id>.jpg`` (the cluster panel). Per map: atlases of
point thumbnails in draw order, ``cache/atlas/<map>/<etag>/<lod>/<k>.jpg``; atlas ``k`` of level
``lod`` holds points ``k * per .. (k + 1) * per - 1`` in a row-major grid of square cells. Because
draw order follows the map's grid cells, the points on screen when zoomed in fall in a few atlases.
Two levels of detail keep GPU memory bounded: small cells for a wide view, large ones close up.
"""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

from corral.api.decodebudget import DecodeBudget, DecodeBusy
from corral.api.errors import ApiError, NotFound
from corral.api.itemindex import ItemIndex, check_item_id
from corral.api.mapdata import MapView
from corral.storage.crops import split_crop_uri
from corral.storage.diskerrors import write_problem
from corral.storage.workspace import Workspace, atomic_write_bytes

logger = logging.getLogger(__name__)

#: level -> (cell edge px, atlas edge px)
LODS: dict[int, tuple[int, int]] = {0: (32, 512), 1: (128, 1024)}
BACKGROUND = (24, 24, 27)
MISSING = (70, 70, 76)


#: The largest original the server reads into memory.
MAX_ORIGINAL_BYTES = 256 << 20


def read_local(path: Path) -> bytes:
    """A local file's bytes, refused (``OSError``) when any part of its path is a symbolic link, when it
    is not a regular file, or when it is larger than :data:`MAX_ORIGINAL_BYTES`."""
    import os
    import stat

    absolute = Path(os.path.abspath(path))
    if Path(os.path.realpath(absolute)) != absolute:
        raise OSError("its path goes through a symbolic link")
    fd = os.open(absolute, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError("it is not a regular file")
        if st.st_size > MAX_ORIGINAL_BYTES:
            raise OSError("it is larger than the server serves")
        return fh.read(MAX_ORIGINAL_BYTES + 1)


#: the thumbnail sizes made: a request is served the smallest one at least as large, so a viewer asking
#: for every size from 16 to 512 makes at most this many files per item, not ~500
THUMB_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def snap_size(size: int) -> int:
    """The thumbnail size that serves a request for ``size`` pixels (16..512)."""
    return next(s for s in THUMB_STEPS if s >= size)


def atlas_layout() -> list[dict[str, int]]:
    """What the viewer needs to address atlases: per level, cell size, atlas size, cells per atlas."""
    return [{"lod": k, "cell": c, "size": s, "per": (s // c) ** 2} for k, (c, s) in LODS.items()]


class ThumbCache:
    """Makes and caches thumbnails and atlases; safe to call from many request threads."""

    def __init__(self, workspace: Workspace, items: ItemIndex, *, thumb_size: int = 128, budget: DecodeBudget | None = None, max_pixels: int | None = None):
        from corral.pipeline.decode import DEFAULT_MAX_PIXELS

        self.workspace = workspace
        self.items = items
        self.thumb_size = thumb_size
        #: every original this cache decodes holds its decoded size of this budget meanwhile
        self.budget = budget if budget is not None else DecodeBudget(1 << 30)
        self.max_pixels = max_pixels or DEFAULT_MAX_PIXELS
        self.root = workspace.cache_dir
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._uncached_warned = False

    def _lock_for(self, key: str) -> threading.Lock:
        with self._guard:
            if len(self._locks) > 10_000:
                self._locks.clear()
            return self._locks.setdefault(key, threading.Lock())

    # -- originals ---------------------------------------------------------------------------
    def original_bytes(self, item_id: str) -> bytes:
        """The original image's bytes (local file or S3 object), only while they are still the bytes
        that were embedded: a local file must be a regular file reached without any symlink, and the
        bytes must hash to the item's id (its parent's for a crop). Otherwise 404 or 410 with why; a
        thumbnail already cached still serves."""
        from corral.pipeline.decode import content_id
        from corral.pipeline.ingest import read_bytes

        uri = self.items.uri(check_item_id(item_id))
        crop = split_crop_uri(uri)
        if crop is not None:  # a crop's bytes are its parent image's
            uri = crop[0]
        try:
            data = read_bytes(uri) if uri.startswith("s3://") else read_local(Path(uri))
        except (OSError, ValueError) as e:
            raise NotFound(f"the original of item {item_id} is not readable now ({type(e).__name__})") from None
        if content_id(data) != self.items.content_id(item_id):
            raise ApiError(f"the original of item {item_id} changed since it was embedded (its bytes no longer match); re-embed the folder to see the new file", status=410)
        return data

    # -- per item thumbnails -----------------------------------------------------------------
    def _keep(self, path: Path, data: bytes) -> Path | bytes:
        """Cache ``data`` at ``path``; on a full or read-only disk, the bytes themselves, so the
        workspace can still be browsed (made again on the next request)."""
        try:
            atomic_write_bytes(path, data)
            return path
        except OSError as e:
            problem = write_problem(e, "the thumbnail cache")
            if problem is None:
                raise
            if not self._uncached_warned:
                logger.warning("thumbnails and atlases are served without caching: %s", problem)
                self._uncached_warned = True
            return data

    def thumb(self, item_id: str, size: int | None = None) -> Path | bytes:
        """A JPEG thumbnail that fits ``size`` x ``size`` (made on first request; its bytes when the
        cache cannot be written)."""
        size = size or self.thumb_size
        if not 16 <= size <= 512:
            raise ApiError(f"size={size}: thumbnails are 16 to 512 pixels")
        size = snap_size(size)
        check_item_id(item_id)
        path = self.root / "thumbs" / str(size) / item_id[:2] / f"{item_id}.jpg"
        if path.is_file():
            return path
        with self._lock_for(str(path)):
            if not path.is_file():
                img = self._thumb_image(item_id, size)
                if img is None:
                    raise NotFound(f"no readable image for item {item_id}")
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=85)
                return self._keep(path, buf.getvalue())
        return path

    def _open_original(self, data: bytes):
        return open_original(data, self.max_pixels)

    def _thumb_image(self, item_id: str, size: int):
        """PIL image of the item fitted into ``size`` (from the cached 128 px thumbnail when smaller)."""
        from PIL import Image

        from corral.pipeline.decode import decode_cost

        base = self.root / "thumbs" / "128" / item_id[:2] / f"{item_id}.jpg"
        try:
            if size <= 128 and base.is_file():
                im: Image.Image = Image.open(base)
                im.load()
            elif (crop := split_crop_uri(self.items.uri(item_id))) is not None:
                im = self._open_original(self.original_bytes(item_id))
                with self.budget.hold(decode_cost(im)):
                    im = crop_region(im, crop[1])
            else:
                return fitted(self._open_original(self.original_bytes(item_id)), size, self.budget)
            im = im.convert("RGB")
            im.thumbnail((size, size), Image.Resampling.BILINEAR)
            return im
        except DecodeBusy:  # the request gets 503; nothing is cached
            raise
        except NotFound:
            return None
        except Exception as e:  # a corrupt or vanished file: the caller shows a placeholder
            logger.warning("thumbnail of %s failed: %s", item_id, e)
            return None

    # -- crops: the box on its parent image --------------------------------------------------
    def crop_view(self, item_id: str, *, max_side: int = 1600) -> Path | bytes | None:
        """For a crop item, its parent image (fitted to ``max_side``) with the box drawn; None otherwise."""
        crop = split_crop_uri(self.items.uri(check_item_id(item_id)))
        if crop is None:
            return None
        path = self.root / "crops" / item_id[:2] / f"{item_id}.jpg"
        if path.is_file():
            return path
        with self._lock_for(str(path)):
            if not path.is_file():
                return self._keep(path, parent_with_box(self.original_bytes(item_id), crop[1], max_side=max_side, budget=self.budget, max_pixels=self.max_pixels))
        return path

    # -- atlases -----------------------------------------------------------------------------
    def atlas(self, view: MapView, lod: int, k: int) -> Path | bytes:
        """Atlas ``k`` of level ``lod`` for ``view`` (JPEG; missing images drawn as grey cells)."""
        if lod not in LODS:
            raise NotFound(f"no atlas level {lod}; levels are {sorted(LODS)}")
        cell, side = LODS[lod]
        per = (side // cell) ** 2
        count = -(-view.n // per)
        if not 0 <= k < count:
            raise NotFound(f"atlas {k} is outside map {view.name!r} (0..{count - 1})")
        path = self.root / "atlas" / view.name / view.etag / str(lod) / f"{k}.jpg"
        if path.is_file():
            return path
        with self._lock_for(str(path)):
            if not path.is_file():
                return self._keep(path, self._make_atlas(view, cell, side, k * per, min(view.n, (k + 1) * per)))
        return path

    def _make_atlas(self, view: MapView, cell: int, side: int, start: int, stop: int) -> bytes:
        from PIL import Image, ImageDraw

        import numpy as np

        sheet = Image.new("RGB", (side, side), BACKGROUND)
        draw = ImageDraw.Draw(sheet)
        cols = side // cell
        ids = view.ids_at(np.arange(start, stop))
        src = 128 if cell <= 128 else cell
        missing = 0
        for j, item_id in enumerate(ids):
            r, c = divmod(j, cols)
            x0, y0 = c * cell, r * cell
            im: Image.Image | None = None
            try:
                im = Image.open(self.thumb(item_id, src))
                im.load()
            except DecodeBusy:  # no room to decode now: the atlas is made later, not cached with holes
                raise
            except (NotFound, ApiError, OSError):
                im = None
            if im is None:
                missing += 1
                pad = max(1, cell // 6)
                draw.rectangle([x0 + pad, y0 + pad, x0 + cell - pad - 1, y0 + cell - pad - 1], fill=MISSING)
                continue
            if im.size[0] > cell or im.size[1] > cell:
                im = im.copy()
                im.thumbnail((cell, cell), Image.Resampling.BILINEAR)
            sheet.paste(im.convert("RGB"), (x0 + (cell - im.size[0]) // 2, y0 + (cell - im.size[1]) // 2))
        if missing:
            logger.info("atlas %s/%d..%d: %d of %d points have no readable image", view.name, start, stop, missing, len(ids))
        buf = io.BytesIO()
        sheet.save(buf, "JPEG", quality=82)
        return buf.getvalue()


def open_original(data: bytes, max_pixels: int):
    """An original, opened but not decoded; one over the pixel limit is refused here."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    if im.size[0] * im.size[1] > max_pixels:
        raise ValueError(f"{im.size[0]}x{im.size[1]} pixels is over the limit of {max_pixels}")
    return im


def fitted(im, size: int, budget: DecodeBudget):
    """An opened (not yet decoded) original as an upright RGB image that fits ``size`` x ``size``.

    Formats that can decode smaller do so (a JPEG at up to 1/8 scale), and the full-size pixels are
    held, within ``budget``, only until they are shrunk: a 12,000 px PNG is decoded once and fitted,
    never transposed or converted at full size."""
    from PIL import Image, ImageOps

    from corral.pipeline.decode import decode_cost, shrink_on_decode

    shrink_on_decode(im, size * 2)
    with budget.hold(decode_cost(im)):
        im.load()
        orientation = im.getexif().get(0x0112, 1)  # after load: a PNG decodes itself whole to find its EXIF
        if im.mode not in ("RGB", "RGBA", "L", "LA"):  # palette, 16-bit, CMYK: resampled as RGB
            im = im.convert("RGBA" if im.mode in ("P", "PA") and ("transparency" in im.info or im.mode == "PA") else "RGB")
        im.thumbnail((size, size), Image.Resampling.BILINEAR)
    if orientation != 1:
        im.getexif()[0x0112] = orientation  # convert() may have dropped it; exif_transpose reads it from here
        im = ImageOps.exif_transpose(im)
    return im.convert("RGB")


def crop_region(im, bbox: tuple[float, float, float, float], *, margin: float = 0.1):
    """The box (``x, y, w, h`` in upright parent pixels) of a parent image, with a small margin."""
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im)  # boxes were found on the upright image
    x, y, w, h = bbox
    m = margin * max(w, h)
    W, H = im.size
    return im.crop((max(0, round(x - m)), max(0, round(y - m)), min(W, round(x + w + m)), min(H, round(y + h + m))))


def parent_with_box(data: bytes, bbox: tuple[float, float, float, float], *, max_side: int = 1600, budget: DecodeBudget | None = None, max_pixels: int | None = None) -> bytes:
    """JPEG of the parent image with the crop's box drawn on it (decoded within ``budget``)."""
    from PIL import ImageDraw

    from corral.pipeline.decode import DEFAULT_MAX_PIXELS

    try:
        im = open_original(data, max_pixels or DEFAULT_MAX_PIXELS)
        w0, h0 = im.size
        im = fitted(im, max_side, budget if budget is not None else DecodeBudget(1 << 30))
    except DecodeBusy:
        raise
    except Exception as e:  # a parent that no longer decodes
        raise NotFound(f"the parent image of this crop is not readable now ({type(e).__name__})") from None
    k = max(im.size) / max(w0, h0)  # the long side stays the long side when EXIF turns the image upright
    x, y, w, h = (v * k for v in bbox)
    line = max(2, round(max(im.size) / 300))
    ImageDraw.Draw(im).rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 196, 0), width=line)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=88)
    return buf.getvalue()
