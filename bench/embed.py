"""Embedding throughput: the whole pipeline from JPEG files against the model alone.

In one run on one machine, with the same model and batch size:

* model-only: synthetic uint8 batches already on the device, through normalisation + model
  (the ceiling the pipeline can reach);
* end-to-end: ``corral.pipeline.embed.embed_items`` over generated ~640x480 JPEG files on disk (read,
  hash, decode in worker processes, transfer, model, write shards).

With ``--engine ray`` each round also runs the Ray engine (:mod:`corral.pipeline.embed_ray`) on
a one-machine cluster started once, with 1 and with 2 actors (``--actors``), over the same files:
its rate counts from the moment every actor has its model loaded (``actors_ready_s`` apart).

Model-only runs with the memory setting the stage itself runs with (freed blocks kept for the next
batch, :mod:`corral.pipeline.heap`), and once without it (``model_only_plain_img_s``), so the
ceiling is the same program the stage runs.

Both are measured in alternating rounds and the best round of each is kept, so a burst of other
load on a shared machine hurts neither side more than the other. Last stdout line is JSON:
``{"model", "device", "batch_size", "model_only_img_s", "end_to_end_img_s", "ratio", ...}``.

On a CPU, where the local engine decodes in threads of its own process
(:func:`corral.pipeline.embed.decode_threads`), each round also runs it with one decode worker
process at idle priority, as it ran before (``one_worker``), and the run measures what bounds the
ratio: the CPU seconds per image of the model (from the model-only rounds) and of reading and
decoding (one thread, every file once). Decoding is work the model-only run does not do, so on
cores the model alone keeps busy the end-to-end rate is at most ``model / (model + decode)`` of it
(``bound_ratio``; ``model_only_cores_busy`` says how busy the model alone kept them, and the
``*_cores_busy_median_round`` fields how many cores each run had, which on a shared machine is
what the other work left it).

    python bench/embed.py                       # CPU here: timm:tf_efficientnet_lite0
    python bench/embed.py --engine ray --rounds 5 --out bench/results/embed_ray.json
    python bench/embed.py --model timm:vit_base_patch16_224 --random-weights --count 20000   # on a GPU
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# As `corral` itself sets it (corral.api.cli): waiting OpenMP threads sleep instead of spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.common import emit_result, peak_rss_mib, provenance  # noqa: E402


def _make_jpeg(args) -> str:
    from PIL import Image

    path, seed, (w, h) = args
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-18, 18, (h, w, 3), dtype=np.int16)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def make_jpegs(folder: Path, count: int, *, size=(640, 480), seed: int = 0) -> list[Path]:
    """Photo-like JPEGs (smooth colour fields plus texture), quality 90, ~60-90 KB each.

    Made on every core (20,000 take minutes on one); image ``i`` depends only on ``seed`` and ``i``.
    """
    from concurrent.futures import ProcessPoolExecutor

    from corral.pipeline.device import cpu_count

    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder / f"img_{i:06d}.jpg"), (seed, i), size) for i in range(count)]
    with ProcessPoolExecutor(max_workers=max(1, cpu_count())) as pool:
        return [Path(p) for p in pool.map(_make_jpeg, jobs, chunksize=64)]


def cpu_seconds() -> float:
    """CPU time of this process, its threads and its finished children (decode workers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def decode_cpu_ms(paths: list[Path], pre, max_pixels: int) -> float:
    """CPU milliseconds per image to read, hash and decode a file to model pixels (the decode
    workers' and threads' work, as :class:`~corral.pipeline.feed.DecodeDataset` does it), one thread."""
    from corral.pipeline.feed import DecodeDataset
    from corral.pipeline.ingest import SourceItem

    ds = DecodeDataset([SourceItem(uri=str(p)) for p in paths], pre, max_pixels=max_pixels, endpoint_url=None, raw_jpeg=False)
    c0 = cpu_seconds()
    for i in range(len(ds)):
        ds[i]
    return (cpu_seconds() - c0) / len(ds) * 1e3


def model_only(embedder, device: str, batch: int, seconds: float) -> float:
    import torch

    x = torch.randint(0, 256, (batch, embedder.preprocess.size, embedder.preprocess.size, 3), dtype=torch.uint8, device=device)
    embedder.embed(x)  # warm-up (and compile, when asked)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while True:
        embedder.embed(x)
        n += batch
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= 3 * batch:
            return n / dt


def device_decode_only(paths: list[Path], pre, device: str, batch: int, seconds: float = 3.0) -> float:
    """JPEG bytes already in memory, decoded + oriented + resized on the device (no model)."""
    import torch

    from corral.pipeline.feed import decode_jpegs_on_device

    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths[:batch]]
    decode_jpegs_on_device(datas, [1] * len(datas), pre, device)
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while True:
        out = decode_jpegs_on_device(datas, [1] * len(datas), pre, device)
        torch.stack(out)
        torch.cuda.synchronize()
        n += len(datas)
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def ray_rate(items, cfg, work: Path, actors: int) -> tuple[float, dict]:
    """The Ray engine's rate once its actors are ready (their start-up timed apart)."""
    from corral.pipeline.embed import embed_items
    from corral.storage.workspace import Workspace

    ws = work / f"ws-{time.monotonic_ns()}"
    res = embed_items(items, workspace=Workspace(ws), config=replace(cfg, engine="ray", ray_actors=actors))
    shutil.rmtree(ws, ignore_errors=True)
    assert res.embedded == len(items), res
    return res.embedded / (res.seconds - res.timings["actors_ready_s"]), res.timings


def end_to_end(embedder, items, cfg, work: Path) -> tuple[float, dict]:
    from corral.pipeline.embed import embed_items
    from corral.storage.workspace import Workspace

    ws = work / f"ws-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    res = embed_items(items, workspace=Workspace(ws), config=cfg, embedder=embedder)
    dt = time.perf_counter() - t0
    shutil.rmtree(ws, ignore_errors=True)
    assert res.embedded == len(items), res
    return res.embedded / dt, res.timings


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="timm:tf_efficientnet_lite0")
    ap.add_argument("--random-weights", action="store_true", help="allow untrained weights (speed does not depend on them)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--count", type=int, default=None, help="JPEG files per end-to-end round (default 320 CPU, 20000 CUDA)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--gpu-decode", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--decode-ahead", choices=("on", "off"), default="on", help="with on-device decoding: decode the next batch while the model runs")
    ap.add_argument("--engine", choices=("local", "ray"), default="local", help="ray: also time the Ray engine with each of --actors")
    ap.add_argument("--actors", default="1,2", help="with --engine ray: actor counts to compare")
    ap.add_argument("--shard-size", type=int, default=None, help="items per shard (default: an eighth of --count, so every actor has shards to embed)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    import torch

    from corral.pipeline.device import cpu_count, pick_device
    from corral.pipeline.embed import EmbedConfig, _resolve, decode_threads
    from corral.pipeline.heap import reuse_freed_memory
    from corral.pipeline.ingest import list_source
    from corral.pipeline.registry import create_embedder

    device, why = pick_device(args.device)
    cfg = EmbedConfig(
        model=args.model,
        random_weights=args.random_weights,
        device=device,
        batch_size=args.batch_size,
        num_workers=args.workers,
        compile=args.compile,
        gpu_decode={"auto": None, "on": True, "off": False}[args.gpu_decode],
        decode_ahead=args.decode_ahead == "on",
        progress=False,
    )
    batch, workers, gpu_decode = _resolve(cfg, device)
    threads = decode_threads(cfg, device)
    # The engine as it ran before it decoded in threads: one idle-priority worker process per two cores.
    one_worker = replace(cfg, num_workers=workers) if threads else None
    if threads:
        workers = 0
    count = args.count or (20000 if device.startswith("cuda") else 320)
    cfg = replace(cfg, shard_size=args.shard_size or max(batch, count // 8))
    embedder = create_embedder(args.model, allow_random=args.random_weights, compile=args.compile).to(device)
    work = Path(tempfile.mkdtemp(prefix="corral-bench-embed-"))
    try:
        t0 = time.perf_counter()
        make_jpegs(work / "jpegs", count)
        gen_s = time.perf_counter() - t0
        items = list_source(work / "jpegs")
        mo: list[float] = []
        mo_plain: list[float] = []
        e2e: list[float] = []
        old_e2e: list[float] = []
        old_cpu_ms: list[float] = []
        timings: list[dict] = []
        mo_cpu_ms: list[float] = []
        e2e_cpu_ms: list[float] = []
        decode_ms: list[float] = []
        actor_counts = [int(a) for a in args.actors.split(",")] if args.engine == "ray" else []
        ray_rates: dict[int, list[float]] = {a: [] for a in actor_counts}
        ray_timings: dict[int, dict] = {}
        if actor_counts:
            import ray

            ray.init(num_cpus=cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        for _ in range(args.rounds):
            # About half an end-to-end round's length once a rate is known (3 s, at least 3 batches, before).
            secs = max(3.0, 0.5 * count / max(mo)) if mo else 3.0
            with reuse_freed_memory():
                c0, t0 = cpu_seconds(), time.perf_counter()
                mo.append(model_only(embedder, device, batch, seconds=secs))
                mo_cpu_ms.append((cpu_seconds() - c0) / (mo[-1] * (time.perf_counter() - t0)) * 1e3)
            mo_plain.append(model_only(embedder, device, batch, seconds=secs))
            c0 = cpu_seconds()
            rate, t = end_to_end(embedder, items, cfg, work)
            e2e_cpu_ms.append((cpu_seconds() - c0) / count * 1e3)
            e2e.append(rate)
            timings.append(t)
            if one_worker is not None:
                c0 = cpu_seconds()
                old_e2e.append(end_to_end(embedder, items, one_worker, work)[0])
                old_cpu_ms.append((cpu_seconds() - c0) / count * 1e3)
            if not gpu_decode:
                decode_ms.append(decode_cpu_ms([Path(it.uri) for it in items], embedder.preprocess, cfg.max_pixels))
            for a in actor_counts:
                r, ray_timings[a] = ray_rate(items, cfg, work, a)
                ray_rates[a].append(r)
            extra = f", one decode process {old_e2e[-1]:.1f} img/s" if old_e2e else ""
            extra += "".join(f", ray x{a} {ray_rates[a][-1]:.1f} img/s" for a in actor_counts)
            print(f"round: model-only {mo[-1]:.1f} img/s ({mo_plain[-1]:.1f} without kept memory), end-to-end {rate:.1f} img/s{extra}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best_mo, best_e2e = max(mo), max(e2e)
    decode_only = None
    if device.startswith("cuda") and gpu_decode:
        make_jpegs(work / "jpegs", batch)
        decode_only = round(device_decode_only(sorted((work / "jpegs").glob("*.jpg")), embedder.preprocess, device, batch), 1)
        shutil.rmtree(work, ignore_errors=True)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    out = {
        "model": args.model,
        "device": device if not device.startswith("cuda") else f"{device} ({torch.cuda.get_device_name(0)})",
        "device_reason": why,
        "batch_size": batch,
        "workers": workers,
        "decode_threads": threads,
        "gpu_decode": gpu_decode,
        "decode_ahead": args.decode_ahead == "on" and gpu_decode,
        "images": count,
        "shard_size": cfg.shard_size,
        "model_only_img_s": round(best_mo, 1),
        "end_to_end_img_s": round(best_e2e, 1),
        "ratio": round(best_e2e / best_mo, 3),
        # Each round's own ratio (model-only and end-to-end run back to back), middle one: less
        # swayed than best/best by one lucky round on a shared machine.
        "ratio_median_round": round(float(np.median([e / m for e, m in zip(e2e, mo)])), 3),
        "device_decode_only_img_s": decode_only,
        "model_only_plain_img_s": round(max(mo_plain), 1),
        "rounds_model_only": [round(x, 1) for x in mo],
        "rounds_model_only_plain": [round(x, 1) for x in mo_plain],
        "rounds_end_to_end": [round(x, 1) for x in e2e],
        "stage_seconds_last_round": timings[-1],
        "model_only_cpu_ms_per_img": round(float(np.median(mo_cpu_ms)), 2),
        "end_to_end_cpu_ms_per_img": round(float(np.median(e2e_cpu_ms)), 2),
        # Cores this process kept busy (CPU seconds per wall second), middle round: on a shared
        # machine, what the other work left it.
        "model_only_cores_busy_median_round": round(float(np.median([c * r for c, r in zip(mo_cpu_ms, mo)])) / 1e3, 2),
        "end_to_end_cores_busy_median_round": round(float(np.median([c * r for c, r in zip(e2e_cpu_ms, e2e)])) / 1e3, 2),
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": round(peak_gpu, 1),
        "generate_s": round(gen_s, 1),
    }
    if decode_ms and not device.startswith("cuda"):
        m, d = float(np.median(mo_cpu_ms)), float(np.median(decode_ms))
        out["decode_cpu_ms_per_img"] = round(d, 2)
        out["model_only_cores_busy"] = round(m * best_mo / 1e3, 2)
        out["bound_ratio"] = round(m / (m + d), 3)
    if old_e2e:
        out["one_worker"] = {
            "end_to_end_img_s": round(max(old_e2e), 1),
            "ratio": round(max(old_e2e) / best_mo, 3),
            "ratio_median_round": round(float(np.median([e / m for e, m in zip(old_e2e, mo)])), 3),
            "rounds_end_to_end": [round(x, 1) for x in old_e2e],
            "cpu_ms_per_img": round(float(np.median(old_cpu_ms)), 2),
            "cores_busy_median_round": round(float(np.median([c * r for c, r in zip(old_cpu_ms, old_e2e)])) / 1e3, 2),
            "threads_vs_one_worker_median_round": round(float(np.median([e / o for e, o in zip(e2e, old_e2e)])), 3),
        }
    if actor_counts:
        best = {a: max(v) for a, v in ray_rates.items()}
        out["ray"] = {
            "actors": {str(a): round(v, 1) for a, v in best.items()},
            "rounds": {str(a): [round(x, 1) for x in v] for a, v in ray_rates.items()},
            "timings_last_round": {str(a): {k: round(v, 3) for k, v in t.items()} for a, t in ray_timings.items()},
            "vs_local_engine": {str(a): round(v / best_e2e, 3) for a, v in best.items()},
            "vs_local_engine_median_round": {str(a): round(float(np.median([r / e for r, e in zip(v, e2e)])), 3) for a, v in ray_rates.items()},
            "vs_model_only": {str(a): round(v / best_mo, 3) for a, v in best.items()},
        }
        if len(best) >= 2:
            lo, hi = min(best), max(best)
            out["ray"][f"ratio_{hi}_vs_{lo}_actors"] = round(best[hi] / best[lo], 3)
            out["ray"][f"ratio_{hi}_vs_{lo}_actors_median_round"] = round(float(np.median([h / w for h, w in zip(ray_rates[hi], ray_rates[lo])])), 3)
    prov = provenance()
    out = {"date": prov["date"], "commit": prov["commit"], "machine": prov["device"], **out}
    emit_result(out, args.out)
    return out


if __name__ == "__main__":
    main()
