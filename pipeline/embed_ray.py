"""The embed stage on a Ray cluster: shards embedded by a pool of actors, written by the driver.

Same reader, mappers and writer as the local engine (:mod:`corral.pipeline.embed`), another
runner. Each actor (one per GPU, ``num_gpus=1``; CPU actors where the cluster has no GPU) builds
the model once and embeds whole shards: its own decode workers read and decode the shard's items
next to the model, and it returns the shard's item rows and vectors. The driver (the process that
ran ``corral embed``) hands out shards, writes each returned shard with the one
:class:`~corral.pipeline.shards.ShardWriter`, in shard order, and keeps the bar.

Why the driver writes: a shard is then written by one process, once, after it is whole, to the
workspace the user named, on any cluster (no shared filesystem, no S3 needed); an actor that dies
leaves nothing on disk and its shard is simply handed to a fresh actor. Writing in order lets the
driver finish the de-duplication the actors cannot do alone (a copy whose first sighting is in
another shard becomes ``duplicate`` exactly as in a local run). The arithmetic at 100M items
(docs/scale-out.md) shows the driver's bandwidth is not what limits it.

Ray is imported only here, and only when ``engine="ray"`` is asked for.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import numpy as np

from corral.pipeline.ingest import SourceItem
from corral.pipeline.shards import Shard, ShardOutput, ShardReader, ShardWriter, resume_state
from corral.storage.workspace import Workspace, atomic_write_json

logger = logging.getLogger(__name__)

#: Attempts at one shard before the run gives up (each on a fresh actor after the last one died).
MAX_ATTEMPTS = 3
#: Shards given to an actor at once: one it works on, one waiting in its queue.
QUEUED = 2
#: Name prefix of the embedding actors (``corral-embed-<n>``), so they can be found in the cluster.
ACTOR_PREFIX = "corral-embed-"


def require_ray() -> Any:
    """The ``ray`` module, or a one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray, which is not installed; install the extra: pip install 'corral[ray]'") from None
    return ray


class EmbedActor:
    """One embedding worker: the mapper (model and, with one, detector) built once, shards in."""

    def __init__(self, config: dict[str, Any], tally: Any, threads: int):
        import torch

        from corral.pipeline.device import pick_device
        from corral.pipeline.embed import EmbedConfig, build_mapper

        self.cfg = EmbedConfig(**{**config, "engine": "local", "progress": False})
        self.tally = tally
        self.device, self.why = pick_device(self.cfg.device)
        if not self.device.startswith("cuda"):
            torch.set_num_threads(threads)
        self.mapper, self.resolved = build_mapper(self.cfg, device=self.device)
        # Decode workers: on a GPU, the node's cores shared among its GPUs; a CPU actor, as the
        # local engine, one per two of its cores (none with one core: it decodes between its
        # model calls).
        workers = self.cfg.num_workers
        if workers is None:
            gpus = torch.cuda.device_count() if self.device.startswith("cuda") else 0
            workers = max(1, (os.cpu_count() or 1) // max(1, gpus) - 1) if gpus else threads // 2
        self.resolved["num_workers_resolved"] = workers
        self.resolved["decode_threads_resolved"] = 0  # an actor decodes in its worker processes, or between its model calls
        self.dtype = np.float16 if self.cfg.dtype == "float16" else np.float32
        self._feed: _ShardFeed | None = None
        self._batches: Any = None

    def describe(self) -> tuple[Any, str, str, dict[str, Any]]:
        return self.mapper.describe(), self.device, self.why, self.resolved

    def pid(self) -> int:
        return os.getpid()

    def embed_shard(self, shard: Shard) -> tuple[ShardOutput, dict[str, float], dict[str, int]]:
        """Shard in, ``(its output, timings, the mapper's counts for it)`` out. De-duplicated within
        the shard only; the driver knows the rest."""
        import torch

        from corral.pipeline.embed import run_batches
        from corral.pipeline.feed import ShardStream, stream_loader
        from corral.pipeline.heap import reuse_freed_memory

        before = Counter(getattr(self.mapper, "counts", {}))
        timings = dict.fromkeys(self.mapper.timing_keys, 0.0)
        got: list[ShardOutput] = []
        done = [0]

        def batch_done(n: int) -> None:
            done[0] += n
            self.tally.set.remote(shard.index, done[0])

        cuda = self.device.startswith("cuda")
        workers = self.resolved["num_workers_resolved"]
        loader: Any
        if workers:
            # One set of decode workers for the actor's life (starting a dozen per shard would cost
            # a GPU a second or two each time): each worker reads every shard from its own queue.
            if self._batches is None or self._feed is None:
                feed = self._feed = _ShardFeed(workers)
                stream = ShardStream(feed.shards, self.mapper.dataset, self.mapper.collate, self.mapper.read_batch)
                self._batches = iter(stream_loader(stream, workers=workers, pin_memory=cuda, nice=0 if cuda else 10))
            else:
                feed = self._feed
            feed.put(shard)
            loader = _one_shard(self._batches)
        else:
            loader = stream_loader(ShardStream(lambda: iter([shard]), self.mapper.dataset, self.mapper.collate, self.mapper.read_batch), workers=0, pin_memory=cuda, nice=0)
        try:
            with reuse_freed_memory():
                sync = torch.cuda.synchronize if cuda else None
                run_batches(self.mapper, loader, seen={}, timings=timings, on_shard=lambda _, out: got.append(out), on_batch=batch_done, dtype=self.dtype, sync=sync)
        except BaseException:
            self._batches = None  # the rest of this shard's batches must not open the next one
            raise
        counts = Counter(getattr(self.mapper, "counts", {}))
        counts.subtract(before)
        return got[0], timings, dict(counts)


class _ShardFeed:
    """Shards for an actor's long-lived decode workers: one queue per worker, each gets every
    shard (a :class:`~corral.pipeline.feed.ShardStream` worker makes its own share of each)."""

    def __init__(self, workers: int):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")  # the loader's workers fork and inherit the queues
        self.queues = [ctx.SimpleQueue() for _ in range(workers)]

    def put(self, shard: Shard) -> None:
        for q in self.queues:
            q.put(shard)

    def shards(self) -> Any:
        import torch

        info = torch.utils.data.get_worker_info()
        q = self.queues[info.id if info is not None else 0]
        while True:
            yield q.get()


def _one_shard(batches: Any) -> Any:
    """The batches of one shard from a loader that runs on: up to the one that ends it."""
    for b in batches:
        yield b
        if b["last"]:
            return


class Tally:
    """Items done per shard, across the cluster: the driver's progress bar reads the sum."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}

    def set(self, shard: int, n: int) -> None:
        self.done[shard] = n

    def total(self) -> int:
        return sum(self.done.values())


def _connect(ray: Any, address: str | None) -> bool:
    """Join the cluster (or start a one-machine one); True when this call started Ray."""
    _reachable(address)
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    _reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ValueError(f"--ray-address {address}: cannot join the Ray cluster ({str(e).splitlines()[0][:200]}); is `ray start --head` running there?") from None
    return True


def _reachable(address: str | None) -> None:
    """Refuse a ``host:port`` nobody answers on at once: Ray itself retries for minutes."""
    import socket

    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray-address {address}: expected host:port of the cluster's head (e.g. 10.0.0.5:6379), or auto")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ValueError(f"--ray-address {address}: nothing answers there ({e.strerror or e}); is `ray start --head` running on {host}?") from None


def run_ray(items: Iterable[SourceItem], *, workspace: Workspace, config: Any, source: str) -> Any:
    """The Ray engine over ``items`` (see the module's docstring); the result is the local engine's."""
    ray = require_ray()
    started = _connect(ray, config.ray_address)
    try:
        return _run(ray, items, workspace=workspace, config=config, source=source)
    finally:
        if started:
            ray.shutdown()


def _run(ray: Any, items: Iterable[SourceItem], *, workspace: Workspace, config: Any, source: str) -> Any:
    from corral.pipeline.embed import _progress, finish, open_set, result, run_record

    cfg = config
    t_start = time.perf_counter()
    ws = workspace.ensure()
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
    n = cfg.ray_actors or (gpus if gpus else max(1, cpus // 4))
    per_cpu = 1 if gpus else max(1, cpus // n)
    opts: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": per_cpu}
    remote_actor = ray.remote(EmbedActor)
    tally = ray.remote(num_cpus=0)(Tally).remote()
    plain = asdict(cfg)
    made = [0]

    def new_actor() -> Any:
        made[0] += 1
        return remote_actor.options(name=f"{ACTOR_PREFIX}{made[0]}", **opts).remote(plain, tally, per_cpu)

    actors = [new_actor() for _ in range(n)]
    try:
        # Every actor has built its model before the first shard goes out: a model that fails to load
        # fails the run here, and the time taken is kept apart from the embedding (``actors_ready_s``).
        try:
            d, device, why, resolved = ray.get([a.describe.remote() for a in actors])[0]
        except ray.exceptions.RayActorError as e:  # its __init__ raised: the model or detector cannot be built
            raise ValueError(f"the embedding actors could not start: {_last_line(e)}") from None
        ready_s = time.perf_counter() - t_start
        logger.info("Ray: %d actor(s) (%s each), device %s (%s)", n, ", ".join(f"{k}={v}" for k, v in opts.items()), device, why)
        es, sidecar = open_set(ws, cfg, d)
        done, seen, next_shard = resume_state(es)
        reader = ShardReader(items, done=done, shard_size=cfg.shard_size, first_index=next_shard)
        logger.info("%d items, %d done earlier, %d to embed in %d shards on %d actor(s)", reader.total, reader.already_done, reader.todo, reader.num_shards, n)
        extra = {"device_resolved": device, "device_reason": why, **resolved, "ray_actors_resolved": n, "ray_actor_resources": opts}
        run_cfg = run_record(cfg, d, source=source, es=es, extra=extra)
        run_path = ws.runs_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-embed.json"
        atomic_write_json(run_path, {"config": run_cfg, "status": "running"})

        writer = ShardWriter(es, sidecar, dim=d.dim, dtype=np.float16 if cfg.dtype == "float16" else np.float32)
        timings: defaultdict[str, float] = defaultdict(float)
        timings["actors_ready_s"] = ready_s
        counts: Counter[str] = Counter()
        if reader.todo:
            bar = _progress(reader.todo, cfg.progress)
            _drive(ray, reader, actors, new_actor, tally, writer, seen=seen, timings=timings, counts=counts, bar=bar)
            bar.close()
        detection: dict[str, Any] = {}
        if d.detector is not None:
            from corral.pipeline.crops import CropOptions, detection_summary

            detection = detection_summary(counts, CropOptions(**(d.crop_options or {})), d.detector_reason)
        res_ = result(reader, writer, d, es=es, seconds=time.perf_counter() - t_start, timings=dict(timings), device=device, detection=detection, engine=f"ray ({n} actor{'s' if n > 1 else ''})")
        return finish(ws, run_path, run_cfg, res_)
    finally:  # on every way out, errors included: an actor holds a GPU (or CPUs) until it goes
        for a in [*actors, tally]:
            ray.kill(a)


def _drive(ray: Any, reader: ShardReader, actors: list[Any], new_actor: Any, tally: Any, writer: ShardWriter, *, seen: dict[str, str], timings: Any, counts: Counter, bar: Any) -> None:
    """Keep every actor busy with up to :data:`QUEUED` shards (the next one waits in the actor's
    queue, so an actor never idles while the driver writes), retry a dead actor's shards on a fresh
    actor, and write returned shards in order, holding at most a few results back for a slow one."""
    from ray.exceptions import RayActorError, RayTaskError

    shards = reader.shards()
    retry: list[Shard] = []
    attempts: Counter[int] = Counter()
    in_flight: dict[Any, tuple[Shard, int, Any]] = {}
    slots = [a for _ in range(QUEUED) for a in range(len(actors))]
    ready_out: dict[int, tuple[ShardOutput, dict[str, float], dict[str, int]]] = {}
    next_write = reader.first_index
    window = (QUEUED + 1) * len(actors)
    exhausted = False
    while True:
        while slots and (retry or not exhausted):
            if retry:
                shard = retry.pop(0)
            else:
                if len(in_flight) + len(ready_out) >= window:
                    break  # a slow shard holds the writer back: hold no more results than this
                shard = next(shards, None)  # type: ignore[arg-type]
                if shard is None:
                    exhausted = True
                    break
            a = slots.pop(0)
            attempts[shard.index] += 1
            in_flight[actors[a].embed_shard.remote(shard)] = (shard, a, actors[a])
        if not in_flight:
            break
        first, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
        rest = [r for r in in_flight if r not in first]
        more, _ = ray.wait(rest, num_returns=len(rest), timeout=0) if first and rest else ([], None)
        for ref in [*first, *more]:
            shard, a, handle = in_flight.pop(ref)
            try:
                ready_out[shard.index] = ray.get(ref)
            except RayTaskError as e:  # the stage itself raised in the actor: the same error here, without Ray's wrapping
                raise (e.cause if isinstance(e.cause, Exception) else RuntimeError(_last_line(e))) from None
            except RayActorError as e:
                if attempts[shard.index] >= MAX_ATTEMPTS:
                    raise RuntimeError(f"shard {shard.index} ({shard.items[0].uri} ...): its actor died {MAX_ATTEMPTS} times; last: {str(e).splitlines()[0][:200]}") from None
                logger.warning("an embedding actor died during shard %d; the shard goes to a fresh actor (nothing of it was written)", shard.index)
                if actors[a] is handle:  # its other queued shard fails too: one replacement
                    actors[a] = new_actor()
                tally.set.remote(shard.index, 0)
                retry.append(shard)
                retry.sort(key=lambda s: s.index)
            slots.append(a)
        while next_write in ready_out:
            out, t, c = ready_out.pop(next_write)
            _dedup(out, seen, c)
            for k, v in t.items():
                timings[k] += v
            counts.update(c)
            timings["write_s"] += writer.write(next_write, out)
            next_write += 1
        _show(ray, tally, bar)


def _last_line(e: BaseException) -> str:
    """The last line of a remote traceback (``ValueError: ...``), without Ray's colour codes."""
    import re

    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:300]


def _show(ray: Any, tally: Any, bar: Any) -> None:
    try:
        n = int(ray.get(tally.total.remote(), timeout=5))
    except Exception:  # the bar is a courtesy; never the reason a run stops
        return
    if n > bar.n:
        bar.update(n - bar.n)


def _dedup(out: ShardOutput, seen: dict[str, str], counts: dict[str, int]) -> None:
    """Finish de-duplication across shards, in shard order, as one local run decides it: an item
    whose content an earlier shard already holds becomes ``duplicate`` (no vector; with a detector,
    no crops, and its counts taken back), and every duplicate names the first uri overall."""
    drop: set[str] = set()
    gone_parents: set[str] = set()
    rows = []
    for row in out.rows:
        share = row.pop("_counts", None)
        parent = row.get("parent_id")
        if parent:
            if parent in gone_parents:
                drop.add(row["id"])
                continue
            rows.append(row)
            continue
        if row["status"] == "ok":
            first = seen.get(row["id"])
            if first is None:
                seen[row["id"]] = row["uri"]
            else:
                row.update(status="duplicate", duplicate_of=first)
                drop.add(row["id"])
                gone_parents.add(row["id"])
                for k, v in (share or {}).items():
                    counts[k] = counts.get(k, 0) - v
        elif row["status"] == "duplicate":
            row["duplicate_of"] = seen.get(row["id"], row.get("duplicate_of", ""))
        rows.append(row)
    out.rows = rows
    if drop:
        keep = [i for i, id_ in enumerate(out.ids) if id_ not in drop]
        mat = np.concatenate(out.vectors) if out.vectors else np.empty((0, 0))
        out.ids = [out.ids[i] for i in keep]
        out.vectors = [mat[keep]] if keep else []
