"""The recognition service behind ``POST /api/recognize``: the loaded index, the encoder, the
micro-batcher that feeds the encoder, and the hot reload of newer published versions.

Images from concurrent requests are decoded in a thread pool, then queued; one worker takes up
to ``max_batch`` of them (waiting at most ``max_wait_ms`` for more once it has one) and embeds
and searches them together, so a GPU sees full batches. A reload task polls the source every
``reload_interval_s`` seconds; a newer version is loaded next to the current one and swapped in
with one assignment, so requests in flight finish on the version they started with and none is
dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corral.api.decodebudget import DecodeBudget
from corral.storage.index_source import IndexSource
from corral.storage.recognizer import Decision, Recognizer

logger = logging.getLogger(__name__)


@dataclass
class Loaded:
    """One version of the index with the encoder that matches it."""

    version: str
    recognizer: Recognizer
    encoder: Any = None  # corral.pipeline.recognize.ImageEncoder, or None when images cannot be embedded
    encoder_error: str | None = None  # why there is no encoder
    loaded_at: float = field(default_factory=time.time)
    regions: Any = None  # corral.pipeline.regions.RegionEncoder for an index of detector crops (a name per box)

    def info(self) -> dict[str, Any]:
        idx = self.recognizer.index
        return {
            "version": self.version,
            "model": idx.meta.model,
            "weights_hash": idx.meta.weights_hash,
            "dim": idx.dim,
            "factory": idx.meta.factory,
            "threshold": self.recognizer.threshold,
            "k": self.recognizer.rule.k,
            "using": self.recognizer.using,
            "learnt_threshold": self.recognizer.head.threshold if self.recognizer.head is not None else None,
            "labels_version": idx.meta.labels_version,
            **idx.row_state(),
            "images": self.encoder is not None,
            "regions": self.regions.detector.name if self.regions is not None else None,
            "images_error": self.encoder_error,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
        }


@dataclass
class Decoded:
    """An upload decoded for one encoder (kept with its bytes in case a reload changes the model)."""

    pixels: np.ndarray
    encoder: Any
    data: bytes


@dataclass
class ImageJob:
    image: Decoded
    k: int | None
    threshold: float | None
    top: int


class MicroBatcher:
    """Gather items from concurrent callers into batches for one synchronous function.

    ``fn(items)`` returns one result per item; it runs in a single worker thread, so the event
    loop keeps accepting requests while a batch computes.
    """

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 32, max_wait_ms: float = 5.0):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch}: must be >= 1")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={max_wait_ms}: must be >= 0")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-batch")
        self.batches = 0
        self.items = 0

    def _ensure(self) -> asyncio.Queue:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(self._queue), name="corral-microbatcher")
        return self._queue

    async def submit(self, item: Any) -> Any:
        """Queue one item and wait for its result (or its batch's exception, or its own:
        ``fn`` may return an exception for one item, which is raised here)."""
        fut = asyncio.get_running_loop().create_future()
        await self._ensure().put((item, fut))
        result = await fut
        if isinstance(result, BaseException):
            raise result
        return result

    async def _run(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - loop.time()
                try:
                    batch.append(queue.get_nowait() if left <= 0 else await asyncio.wait_for(queue.get(), left))
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
            live = [(it, f) for it, f in batch if not f.cancelled()]
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._pool, self.fn, [it for it, _ in live])
                for (_, f), r in zip(live, results):
                    if not f.done():
                        f.set_result(r)
            except Exception as e:  # hand the error to every caller of this batch
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
            self.batches += 1
            self.items += len(live)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)


class NotReady(RuntimeError):
    """No index is loaded (yet), or images cannot be embedded."""


class RecognitionService:
    """Serves one index source; see the module docstring.

    Args:
        source: where versions come from (:func:`corral.storage.index_source.open_source`).
        images: build the encoder so images can be recognised (vectors work without it).
        weights: weight file or folder for the encoder when the default lookup would not find them.
        device: auto, cpu, cuda or cuda:N for the encoder.
        max_batch: most images embedded together.
        max_wait_ms: how long the batcher waits for more images once it has one.
        reload_interval_s: how often the source is asked for a newer version (0: never).
        budget: the memory uploads may take while they decode (the server's, so thumbnails and
            uploads share it); a budget of 1 GiB of its own when not given.
    """

    def __init__(
        self,
        source: IndexSource,
        *,
        images: bool = True,
        weights: str | None = None,
        device: str = "auto",
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        reload_interval_s: float = 10.0,
        budget: DecodeBudget | None = None,
    ):
        if reload_interval_s < 0:
            raise ValueError(f"reload_interval_s={reload_interval_s}: must be >= 0")
        self.source = source
        self.images = images
        self.weights = weights
        self.device = device
        self.reload_interval_s = reload_interval_s
        self.current: Loaded | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self.batcher = MicroBatcher(self._embed_and_recognize, max_batch=max_batch, max_wait_ms=max_wait_ms)
        self._reload_task: asyncio.Task | None = None
        self._load_lock = threading.Lock()
        self._regions_lock = threading.Lock()
        self._decode_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="corral-decode")
        self.budget = budget if budget is not None else DecodeBudget(1 << 30)

    # -- loading ----------------------------------------------------------------------------
    def load_version(self, version: str) -> Loaded:
        """Load ``version`` (and its encoder, reusing the current one when the model is the same)."""
        with self._load_lock:
            rec = Recognizer(self.source.load(version))
            meta = rec.index.meta
            enc, err = None, None
            cur = self.current
            regions = None
            if cur is not None and cur.encoder is not None and (cur.encoder.model, cur.encoder.weights_hash) == (meta.model, meta.weights_hash):
                enc = cur.encoder
            elif self.images:
                from corral.pipeline.recognize import ImageEncoder

                try:
                    enc = ImageEncoder(model=meta.model, weights_hash=meta.weights_hash, weights=self.weights, device=self.device)
                except (ValueError, OSError, RuntimeError) as e:  # missing or different weights: vectors still work
                    err = str(e).splitlines()[0][:300]
                    logger.warning("images cannot be recognised with version %s: %s", version, err)
            det = dict(meta.detection or {})
            if self.images and enc is not None and det.get("detector"):
                # the same embedder (so the same model and weights) and the same crop rules: keep it
                if cur is not None and cur.regions is not None and cur.regions.embedder is enc.embedder and cur.recognizer.index.meta.detection == meta.detection:
                    regions = cur.regions
                else:
                    from corral.pipeline.regions import RegionEncoder

                    try:
                        opts = {k: det[k] for k in ("min_size", "pad") if det.get(k) is not None}
                        regions = RegionEncoder(detector=det["detector"], model=meta.model, weights_hash=meta.weights_hash, device=self.device, embedder=enc.embedder, **opts)
                    except (ValueError, OSError, RuntimeError, ImportError) as e:  # no detector here: whole images still work
                        logger.warning("boxes cannot be recognised with version %s: %s", version, str(e).splitlines()[0][:300])
            return Loaded(version, rec, enc, err, regions=regions)

    def refresh(self) -> bool:
        """Load the source's newest version if it is not the current one; True when swapped."""
        version = self.source.latest()
        if self.current is not None and self.current.version == version:
            return False
        loaded = self.load_version(version)
        old = self.current
        self.current = loaded  # one assignment: requests in flight keep the version they hold
        self.reloads += old is not None
        self.last_error = None
        logger.info("recognition index version %s loaded (%d rows)%s", version, loaded.recognizer.index.ntotal, f", replacing {old.version}" if old else "")
        return True

    async def start(self, *, require_index: bool = False) -> None:
        """Load the newest version now and start polling for newer ones."""
        try:
            await asyncio.to_thread(self.refresh)
        except Exception as e:  # the source may not have a version yet: keep polling
            self.last_error = str(e).splitlines()[0][:300]
            if require_index:
                raise
            logger.warning("no recognition index yet (%s); will retry", self.last_error)
        if self.reload_interval_s > 0 and self._reload_task is None:
            self._reload_task = asyncio.get_running_loop().create_task(self._poll(), name="corral-index-reload")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval_s)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as e:  # keep serving the current version; say why once per change
                msg = str(e).splitlines()[0][:300]
                if msg != self.last_error:
                    logger.warning("could not load a newer index version: %s", msg)
                self.last_error = msg

    async def close(self) -> None:
        if self._reload_task is not None:
            self._reload_task.cancel()
            try:
                await self._reload_task
            except (asyncio.CancelledError, Exception):
                pass
            self._reload_task = None
        await self.batcher.close()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

    def require(self) -> Loaded:
        cur = self.current
        if cur is None:
            raise NotReady(f"no recognition index loaded from {self.source.description}" + (f" ({self.last_error})" if self.last_error else "; build one with `corral index build`"))
        return cur

    # -- answering --------------------------------------------------------------------------
    async def decode(self, data: bytes) -> Decoded:
        """Decode upload bytes in the thread pool (raises SkipItem for bad images)."""
        cur = self.require()
        enc = cur.encoder
        if enc is None:
            raise NotReady(f"images cannot be recognised: {cur.encoder_error or 'the service runs without an encoder'}; send vectors instead")
        pixels = await asyncio.get_running_loop().run_in_executor(self._decode_pool, self._decode, enc, data)
        return Decoded(pixels, enc, data)

    def _decode(self, enc: Any, data: bytes) -> np.ndarray:
        """``enc.decode(data)`` holding the memory it needs (read from the header) of the budget."""
        from corral.pipeline.decode import bytes_decode_cost

        with self.budget.hold(bytes_decode_cost(data, draft_to=enc.preprocess.resize)):
            return enc.decode(data)

    async def recognize_image(self, image: Decoded, *, k: int | None, threshold: float | None, top: int) -> tuple[Decision, str]:
        """Embed and recognise one decoded image through the micro-batcher."""
        return await self.batcher.submit(ImageJob(image, k, threshold, top))

    def _embed_and_recognize(self, jobs: list[ImageJob]) -> list[tuple[Decision, str] | Exception]:
        cur = self.require()
        enc = cur.encoder
        if enc is None:
            raise NotReady(f"images cannot be recognised: {cur.encoder_error}")
        out: list[Any] = [None] * len(jobs)
        pixels: dict[int, np.ndarray] = {}
        for i, j in enumerate(jobs):
            if j.image.encoder is enc:
                pixels[i] = j.image.pixels
                continue
            try:  # decoded for the previous version's model: decode again for this one
                pixels[i] = self._decode(enc, j.image.data)
            except Exception as e:  # SkipItem and friends go back to that one caller
                out[i] = e
        live = sorted(pixels)
        vecs = enc.embed([pixels[i] for i in live])
        groups: dict[tuple[Any, Any, int], list[int]] = {}
        for pos, i in enumerate(live):
            j = jobs[i]
            groups.setdefault((j.k, j.threshold, j.top), []).append(pos)
        for (k, t, top), rows in groups.items():
            for pos, d in zip(rows, cur.recognizer.recognize(vecs[rows], k=k, threshold=t, top=top)):
                out[live[pos]] = (d, cur.version)
        return out

    def recognize_regions(self, data: bytes, *, k: int | None, threshold: float | None, top: int) -> tuple[dict[str, Any], str]:
        """Detect the boxes in one image and name each (called from a worker thread); raises
        SkipItem for an image that does not decode, NotReady without a crops index."""
        cur = self.require()
        if cur.regions is None:
            raise NotReady("this index does not hold detector crops (or no detector is installed here): send whole images without regions=true")
        enc = cur.regions
        from corral.pipeline.decode import bytes_decode_cost

        with self._regions_lock, self.budget.hold(bytes_decode_cost(data)):  # one detector and embedder: one image at a time
            r = enc.encode(data)
        decisions = cur.recognizer.recognize(r.vectors, k=k, threshold=threshold, top=top) if r.bboxes else []
        boxes = []
        for box, score, cat, d in zip(r.bboxes, r.scores, r.categories, decisions):
            g = {"bbox": [int(v) for v in box], "detector_score": round(float(score), 4), "label": d.label, "score": round(float(d.score), 6), "top": [[n, round(float(v), 6)] for n, v in d.top]}
            if cat:
                g["category"] = cat
            boxes.append(g)
        return {"detector": enc.detector.name, "width": r.width, "height": r.height, "regions": boxes, "dropped": r.dropped}, cur.version

    def recognize_vectors(self, vectors: np.ndarray, *, k: int | None, threshold: float | None, top: int, model: str | None = None, weights_hash: str | None = None) -> tuple[list[Decision], str]:
        """Recognise already-embedded vectors (called from a worker thread)."""
        cur = self.require()
        cur.recognizer.check_model(model, weights_hash)
        return cur.recognizer.recognize(vectors, k=k, threshold=threshold, top=top), cur.version

    def status(self) -> dict[str, Any]:
        cur = self.current
        return {
            "source": self.source.description,
            "loaded": cur.info() if cur else None,
            "last_error": self.last_error,
            "reloads": self.reloads,
            "batches": self.batcher.batches,
            "batched_images": self.batcher.items,
            "max_batch": self.batcher.max_batch,
        }
