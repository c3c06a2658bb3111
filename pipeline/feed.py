"""Feeding the model: decode workers, batches, and JPEG decoding on the model's device.

The embed stage (:mod:`corral.pipeline.embed`) reads items through a torch ``DataLoader`` over
:class:`DecodeDataset`: worker processes read and hash each file and either decode it to the
model's input size (CPU path) or, with on-device decoding, pass JPEG bytes through untouched. With
the model on the CPU, whole images are decoded by idle-priority threads of the model's own process
instead (:func:`thread_loader`).
:func:`collate` packs a batch (a batch's JPEG bytes travel as one tensor), and
:func:`decode_ahead` decodes those JPEGs on the device (nvJPEG on CUDA), on a side stream in a
thread so that decoding overlaps the model. Batches never cross a shard boundary
(:func:`shard_batches`).
"""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Iterator
from typing import Any

from corral.pipeline.decode import (
    Preprocess,
    SkipItem,
    content_id,
    decode_for_model,
    is_jpeg,
    jpeg_orientation,
    open_image,
)
from corral.pipeline.ingest import SourceItem, read_bytes


def read_record(item: SourceItem, pos: int, endpoint_url: str | None) -> tuple[dict[str, Any], bytes | None]:
    """A worker's record for one item plus its bytes; ``None`` bytes when it cannot be read (the
    record then says so: skipped, unreadable, why)."""
    rec: dict[str, Any] = {"pos": pos, "uri": item.uri, "status": "ok", "reason": "", "detail": "", "id": "", "bytes": 0, "width": 0, "height": 0}
    try:
        data = read_bytes(item.uri, endpoint_url=endpoint_url)
    except (OSError, ValueError) as e:
        rec.update(status="skipped", reason="unreadable", detail=str(e)[:200])
        return rec, None
    rec["bytes"] = len(data)
    return rec, data


class DecodeDataset:
    """Map-style dataset over source items; runs inside DataLoader worker processes."""

    def __init__(self, items: list[SourceItem], pre: Preprocess, *, max_pixels: int, endpoint_url: str | None, raw_jpeg: bool):
        self.items = items
        self.pre = pre
        self.max_pixels = max_pixels
        self.endpoint_url = endpoint_url
        self.raw_jpeg = raw_jpeg

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        t0 = time.perf_counter()
        rec, data = read_record(self.items[i], i, self.endpoint_url)
        if data is None:
            rec["decode_s"] = time.perf_counter() - t0
            return rec
        try:
            if not data:
                raise SkipItem("empty", "zero-byte file")
            rec["id"] = content_id(data)
            if self.raw_jpeg and is_jpeg(data):
                w, h = _jpeg_header_size(data, self.max_pixels)
                orient = jpeg_orientation(data)
                rec.update(width=h if orient in (5, 6, 7, 8) else w, height=w if orient in (5, 6, 7, 8) else h)
                rec["jpeg"] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                rec["orientation"] = orient
            else:
                arr, w, h = decode_for_model(data, self.pre, max_pixels=self.max_pixels)
                rec.update(width=w, height=h)
                rec["pixels"] = torch.from_numpy(arr)
        except SkipItem as e:
            rec.update(status="skipped", reason=e.reason, detail=e.detail)
        rec["decode_s"] = time.perf_counter() - t0
        return rec


def _jpeg_header_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    from PIL import Image

    try:
        w, h = Image.open(io.BytesIO(data)).size
    except Exception:
        open_image(data, max_pixels=max_pixels)  # raises the CPU decoder's reason, so both paths agree
        raise SkipItem("decode_error", "unreadable JPEG header") from None
    if w * h > max_pixels:
        raise SkipItem("too_large", f"{w}x{h} pixels is over the limit of {max_pixels}")
    return w, h


def collate(recs: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    px = [r.pop("pixels") for r in recs if "pixels" in r]
    # A batch's JPEG bytes travel as one tensor (one shared-memory block between processes, not
    # one per image); ``jpeg_sizes`` cuts it back into images.
    jpegs = [r.pop("jpeg") for r in recs if "jpeg" in r]
    return {
        "records": recs,
        "pixels": torch.stack(px) if px else None,
        "jpeg": torch.cat(jpegs) if jpegs else None,
        "jpeg_sizes": [int(j.numel()) for j in jpegs],
    }


def _jpeg_list(b: dict[str, Any]) -> list:
    """The batch's JPEG byte tensors (views into the one collated tensor)."""
    if b.get("jpeg") is None:
        return []
    return list(b["jpeg"].split(b["jpeg_sizes"]))


def worker_init(_: int, nice: int = 0) -> None:
    import torch

    torch.set_num_threads(1)
    if nice:
        idle_priority(nice)


def idle_priority(nice: int = 10) -> None:
    """Run the calling process (a decode worker) or thread (a decode thread) only where the
    model's threads leave a core free.

    On a CPU-only run the model's threads own the cores; decoding fills the gaps between them
    instead of stalling their synchronised parallel regions. SCHED_IDLE does exactly that on
    Linux: a model thread that wakes (a batch's next layer) takes its core back at once instead of
    waiting out the decoder's time slice while its partner thread sleeps at the layer's barrier.
    Measured on the shared 2-core machine, interleaved rounds: at load 9 the stage ran at 0.878 of
    the model-only rate against 0.708 with nice 10; at load 2.4, 0.711 against 0.696 (and 0.702
    with no nice at all). Where there is no SCHED_IDLE, a plain nice value. On Linux both apply to
    the calling thread only.
    """
    import os

    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(nice)
        except OSError:
            pass


def shard_batches(n: int, shard_size: int, batch_size: int) -> list[list[int]]:
    """Index batches that never cross a shard boundary."""
    out = []
    for s in range(0, n, shard_size):
        end = min(s + shard_size, n)
        for b in range(s, end, batch_size):
            out.append(list(range(b, min(b + batch_size, end))))
    return out


class ShardStream:
    """The batches of a run's shards, made in decode worker processes, in order (a torch
    ``IterableDataset`` of already collated batches; use it with ``batch_size=None``), or by
    threads of this process (:func:`thread_loader`).

    ``shards()`` yields :class:`~corral.pipeline.shards.Shard` s and is called once in every worker;
    ``dataset(items)`` builds the map-style dataset that reads and decodes a shard's items. Batch
    ``k`` of the run is made by worker ``k % num_workers``: torch's loader asks its workers in turn
    and hands batches on in the order it asked, so the batches come out exactly as one process
    would make them (:func:`shard_batches`: none crosses a shard boundary). Each batch says which
    shard it belongs to (``shard``) and whether it ends it (``last``).
    """

    def __init__(self, shards: Any, dataset: Any, collate_fn: Any, batch_size: int):
        self.shards = shards
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.batch_size = batch_size

    def plan(self) -> Iterator[tuple[Any, list[int]]]:
        """``(shard, item indices)`` of every batch of the run, in order."""
        for shard in self.shards():
            for idx in shard_batches(len(shard.items), len(shard.items), self.batch_size):
                yield shard, idx

    def batch(self, shard: Any, idx: list[int], recs: list[dict[str, Any]]) -> dict[str, Any]:
        """The collated batch of ``shard``'s items ``idx``, from their decoded records."""
        b = self.collate_fn(recs)
        b["shard"], b["last"] = shard.index, idx[-1] == len(shard.items) - 1
        b["sources"] = {shard.items[i].uri: shard.items[i] for i in idx}  # labels and metadata for the item rows
        return b

    def __iter__(self) -> Any:
        import torch

        info = torch.utils.data.get_worker_info()
        me, every = (info.id, info.num_workers) if info is not None else (0, 1)
        ds: Any = None
        ds_shard = None
        for k, (shard, idx) in enumerate(self.plan()):
            if k % every == me:
                if ds_shard is not shard:
                    ds, ds_shard = self.dataset(shard.items), shard
                yield self.batch(shard, idx, [ds[i] for i in idx])


def stream_loader(stream: ShardStream, *, workers: int, pin_memory: bool, nice: int) -> Any:
    """A torch loader over ``stream`` with ``workers`` decode processes (0: decode in this one)."""
    import torch

    class _Iterable(torch.utils.data.IterableDataset):
        def __iter__(self) -> Any:
            return iter(stream)

    return torch.utils.data.DataLoader(
        _Iterable(),
        batch_size=None,
        collate_fn=_as_is,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=functools.partial(worker_init, nice=nice) if workers else None,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


def _as_is(b: Any) -> Any:
    return b


def thread_loader(stream: ShardStream, *, threads: int, ahead: int = 4) -> Iterator[dict[str, Any]]:
    """The batches of ``stream``, in order, decoded by ``threads`` threads of this process, up to
    ``ahead`` batches before the model asks for them.

    For a model on the CPU, where decoding and the model share the same few cores. The decode
    threads run at idle priority (:func:`idle_priority`) and so fill the gaps the model's threads
    leave. When the model has to wait for a batch they run at normal priority until that batch is
    ready: every core then decodes its items (one task per item), and another process's work on the
    machine cannot starve them while the model waits (an idle-priority thread gets almost no CPU
    beside a busy process). One worker process at idle priority, the loader's way, left a core idle
    while the model waited, and passes every batch through shared memory. The same batches,
    decoded by the same functions, reach the model in the same order, so the vectors are identical
    bit for bit. Raising a thread back from idle priority needs the privilege to (root, or a high
    enough RLIMIT_NICE); without it the threads stay at idle priority.
    """
    import os
    import threading
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    tids: list[int] = []

    def start() -> None:
        tids.append(threading.get_native_id())
        idle_priority()

    def priority(policy: str) -> None:
        for tid in tids:
            try:
                os.sched_setscheduler(tid, getattr(os, policy), os.sched_param(0))
            except (AttributeError, OSError):
                return

    pool = ThreadPoolExecutor(threads, thread_name_prefix="corral-decode", initializer=start)
    plan = stream.plan()
    queued: deque[tuple[Any, list[int], list[Future]]] = deque()
    current: list[Any] = [None, None]  # the shard whose dataset is open, and that dataset

    def submit() -> None:
        nxt = next(plan, None)
        if nxt is None:
            return
        shard, idx = nxt
        if current[0] is not shard:
            current[:] = [shard, stream.dataset(shard.items)]
        queued.append((shard, idx, [pool.submit(current[1].__getitem__, i) for i in idx]))

    try:
        for _ in range(ahead):
            submit()
        while queued:
            shard, idx, futures = queued.popleft()
            if all(f.done() for f in futures):
                recs = [f.result() for f in futures]
            else:
                priority("SCHED_OTHER")
                try:
                    recs = [f.result() for f in futures]
                finally:
                    priority("SCHED_IDLE")
            submit()
            yield stream.batch(shard, idx, recs)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------
# On-device JPEG decoding (nvJPEG on CUDA; also runs on the CPU, which is how it is tested)


def decode_jpegs_on_device(datas: list, orientations: list[int], pre: Preprocess, device: Any) -> list:
    """Decode JPEG byte tensors on ``device`` into ``size x size x 3`` uint8 tensors.

    Returns one entry per input: a tensor, or ``None`` when that JPEG could not be decoded there
    (the caller falls back to the CPU decoder, which records the reason). Images that share a
    size and orientation are resized together, in one call.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    dev = torch.device(device)
    try:
        imgs = decode_jpeg(datas, mode=ImageReadMode.RGB, device=dev)
    except Exception:
        imgs = []
        for d in datas:
            try:
                imgs.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=dev))
            except Exception:
                imgs.append(None)
    out: list = [None] * len(imgs)
    groups: dict[tuple, list[int]] = {}
    for i, (img, orient) in enumerate(zip(imgs, orientations)):
        if img is not None:
            groups.setdefault((tuple(img.shape), int(orient)), []).append(i)
    for (_, orient), idx in groups.items():
        batch = torch.stack([imgs[i] for i in idx]) if len(idx) > 1 else imgs[idx[0]].unsqueeze(0)
        for i, x in zip(idx, _orient_resize_crop(batch, orient, pre)):
            out[i] = x
    return out


def _orient_resize_crop(img, orientation: int, pre: Preprocess):
    """``[B, 3, H, W]`` uint8 -> ``[B, size, size, 3]`` uint8: EXIF orientation, resize, centre crop."""
    import torch
    import torch.nn.functional as F

    # EXIF orientations as flips / quarter turns of the (H, W) axes.
    if orientation == 2:
        img = img.flip(-1)
    elif orientation == 3:
        img = img.rot90(2, (2, 3))
    elif orientation == 4:
        img = img.flip(-2)
    elif orientation == 5:
        img = img.transpose(2, 3)
    elif orientation == 6:
        img = img.rot90(-1, (2, 3))
    elif orientation == 7:
        img = img.rot90(1, (2, 3)).flip(-2)
    elif orientation == 8:
        img = img.rot90(1, (2, 3))
    _, _, h, w = img.shape
    scale = pre.resize / min(h, w)
    nh, nw = max(pre.size, round(h * scale)), max(pre.size, round(w * scale))
    mode = "bicubic" if pre.interpolation == "bicubic" else "bilinear"
    x = F.interpolate(img.float(), size=(nh, nw), mode=mode, antialias=True, align_corners=False)
    top, left = (nh - pre.size) // 2, (nw - pre.size) // 2
    x = x[:, :, top : top + pre.size, left : left + pre.size]
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def _device_pixels(b: dict[str, Any], pre: Preprocess, device: str, max_pixels: int) -> dict[int, Any]:
    """Decode a batch's raw JPEGs on the device: ``{record position: [size, size, 3] uint8}``.

    A JPEG the device decoder refuses goes through the CPU decoder, which either manages or marks
    the record skipped with the reason.
    """
    import torch

    jpeg_recs = [r for r in b["records"] if "orientation" in r]
    dev_px: dict[int, Any] = {}
    if not jpeg_recs:
        return dev_px
    datas = _jpeg_list(b)
    decoded = decode_jpegs_on_device(datas, [r["orientation"] for r in jpeg_recs], pre, device)
    for r, img, data in zip(jpeg_recs, decoded, datas):
        if img is None:
            try:
                arr, _, _ = decode_for_model(data.numpy().tobytes(), pre, max_pixels=max_pixels)
                img = torch.from_numpy(arr).to(device)
            except SkipItem as e:
                r.update(status="skipped", reason=e.reason, detail=e.detail)
                continue
        dev_px[r["pos"]] = img
    return dev_px


def decode_ahead(loader: Any, pre: Preprocess, device: str, max_pixels: int, timings: dict[str, float], depth: int = 2, ahead: bool = True):
    """Yield ``(batch, device pixels)``; on CUDA (and ``ahead``) the next batches decode on a side
    stream, in a thread, while the model runs on the current one (nvJPEG and the model overlap)."""
    import queue
    import threading

    import torch

    if not (ahead and device.startswith("cuda")):
        for b in loader:
            t0 = time.perf_counter()
            px = _device_pixels(b, pre, device, max_pixels)
            timings["device_decode_s"] += time.perf_counter() - t0
            yield b, px, None
        return
    side = torch.cuda.Stream(device=device)
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            with torch.cuda.stream(side):
                for b in loader:
                    t0 = time.perf_counter()
                    px = _device_pixels(b, pre, device, max_pixels)
                    ev = torch.cuda.Event()
                    ev.record(side)
                    timings["device_decode_s"] += time.perf_counter() - t0
                    while not stop.is_set():
                        try:
                            q.put((b, px, ev), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            q.put(done)
        except BaseException as e:  # re-raised in the consumer
            q.put(e)

    th = threading.Thread(target=work, name="corral-decode-ahead", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            b, px, ev = item
            cur = torch.cuda.current_stream(device)
            cur.wait_event(ev)
            for t in px.values():
                t.record_stream(cur)  # freed memory is not reused until the model stream is done with it
            yield b, px, ev
    finally:
        stop.set()
        th.join(timeout=10)
