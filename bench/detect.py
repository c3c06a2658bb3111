"""Crops per second with detection on: the embed stage against a plain serial loop.

In one run on one machine, with the same detector, embedder and group photos:

* pipeline: ``corral.pipeline.embed.embed_items`` with ``detector`` set (decode and, for CPU detectors,
  detection in worker processes; crops embedded in batches; shards written);
* baseline: the loop one would write first, one photo at a time in one process: read, decode,
  detect, cut the crops, embed them (no writing);
* parts: the detector alone on decoded photos and the embedder alone on ready crops, which bound
  what the pipeline can reach.

Photos are group shots made from the ORL faces in ``../shared/data`` (4 people per 900 x 600
canvas, pasted at 1.6-2.2x), so every crop is a real face. Rounds alternate pipeline and baseline
and the best of each is kept. Last stdout line is JSON: ``{"detector", "model", "device",
"pipeline_crops_s", "baseline_crops_s", "speedup", "detect_only_img_s", "embed_only_crops_s",
"peak_rss_mib", ...}``.

    python bench/detect.py                                  # CPU here: face (dlib:hog-face) + dlib:face-resnet
    python bench/detect.py --detector torchvision:fasterrcnn_resnet50_fpn --detector-weights FILE \\
        --model timm:tf_efficientnet_lite0 --count 2000      # on a GPU
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import emit_result, peak_rss_mib  # noqa: E402


def make_photos(folder: Path, count: int, *, seed: int = 0) -> int:
    """``count`` group photos of 4 ORL faces each; returns the number of faces pasted."""
    from bench.groups import compose, orl_photos

    data = Path(os.environ.get("CORRAL_SHARED", REPO.parent / "shared")) / "data" / "orl_faces" / "images"
    photos = orl_photos(data, people=40, photos=range(10), seed=seed)
    while len(photos) < 4 * count:
        photos = photos + photos
    return len(compose(folder, photos[: 4 * count], per_image=4, seed=seed))


def baseline(paths: list[Path], *, detector, embedder, opts, device: str) -> tuple[float, int]:
    """The serial loop: one photo at a time, everything in this process."""
    import torch

    from corral.pipeline import crops as cropping
    from corral.pipeline.decode import open_image

    n, t0 = 0, time.perf_counter()
    for p in paths:
        img = np.array(open_image(p.read_bytes()))
        det = detector.detect([img])[0]
        kept = cropping.clean_boxes(det, img.shape[1], img.shape[0], min_score=opts.min_score, min_size=opts.min_size, counts=Counter())
        px, inner = cropping.cut_squares(torch.from_numpy(img).to(device), [k[0] for k in kept], size=opts.crop_size, pad=opts.pad)
        if len(kept):
            cropping.embed_crops(embedder, px, inner, batch_size=64)
        n += len(kept)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0), n


def parts(paths: list[Path], *, detector, embedder, opts, device: str) -> tuple[float, float]:
    """Detector alone (img/s on decoded photos) and embedder alone (crops/s on ready crops)."""
    import torch

    from corral.pipeline import crops as cropping
    from corral.pipeline.decode import open_image

    imgs = [np.array(open_image(p.read_bytes())) for p in paths]
    t0 = time.perf_counter()
    found = []
    for s in range(0, len(imgs), 16):
        found += detector.detect(imgs[s : s + 16])
    det_s = len(imgs) / (time.perf_counter() - t0)
    px, inner = [], []
    for img, det in zip(imgs, found):
        kept = cropping.clean_boxes(det, img.shape[1], img.shape[0], min_score=opts.min_score, min_size=opts.min_size, counts=Counter())
        a, b = cropping.cut_squares(torch.from_numpy(img).to(device), [k[0] for k in kept], size=opts.crop_size, pad=opts.pad)
        px.append(a)
        inner.append(b)
    px, inner = torch.cat(px), torch.cat(inner)
    t0 = time.perf_counter()
    cropping.embed_crops(embedder, px, inner, batch_size=64)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return det_s, len(px) / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default="face")
    ap.add_argument("--detector-weights", default=None)
    ap.add_argument("--model", default="dlib:face-resnet")
    ap.add_argument("--random-weights", action="store_true", help="allow an untrained embedder (speed does not depend on weights)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--count", type=int, default=None, help="group photos per round (default 48 CPU, 2000 CUDA)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    import torch

    from corral.pipeline.crops import CropOptions
    from corral.pipeline.detect import create_detector, resolve_name
    from corral.pipeline.device import pick_device
    from corral.pipeline.embed import EmbedConfig, _resolve, embed_items
    from corral.pipeline.ingest import list_source
    from corral.pipeline.registry import create_embedder
    from corral.storage.workspace import Workspace

    device, why = pick_device(args.device)
    det_name, det_why = resolve_name(args.detector)
    cfg = EmbedConfig(
        model=args.model,
        random_weights=args.random_weights,
        device=device,
        batch_size=args.batch_size,
        num_workers=args.workers,
        detector=det_name,
        detector_weights=args.detector_weights,
        progress=False,
    )
    batch, workers, _ = _resolve(cfg, device)
    count = args.count or (2000 if device.startswith("cuda") else 48)
    embedder = create_embedder(args.model, allow_random=args.random_weights).to(device)
    detector = create_detector(det_name, weights=args.detector_weights, min_size=cfg.min_size)
    if device.startswith("cuda") and detector.uses_gpu:
        detector = detector.to(device)
    opts = CropOptions(
        detector=det_name,
        min_score=detector.default_min_score,
        min_size=cfg.min_size,
        pad=max(cfg.pad, float(getattr(embedder, "min_crop_pad", 0.0))),
        crop_size=int(embedder.preprocess.size),
        detect_max_side=cfg.detect_max_side,
    )
    work = Path(tempfile.mkdtemp(prefix="corral-bench-detect-"))
    try:
        t0 = time.perf_counter()
        faces = make_photos(work / "photos", count)
        gen_s = time.perf_counter() - t0
        items = list_source(work / "photos")
        paths = [Path(it.uri) for it in items]
        pipe, base, timings, crops_seen = [], [], [], 0
        for r in range(args.rounds):
            ws = work / f"ws-{r}"
            t0 = time.perf_counter()
            res = embed_items(items, workspace=Workspace(ws), config=cfg, embedder=embedder)
            pipe.append(res.embedded / (time.perf_counter() - t0))
            timings.append(res.timings)
            crops_seen = res.embedded
            shutil.rmtree(ws, ignore_errors=True)
            rate, n = baseline(paths, detector=detector, embedder=embedder, opts=opts, device=device)
            base.append(rate)
            print(f"round {r}: pipeline {pipe[-1]:.1f} crops/s, serial loop {rate:.1f} crops/s ({n} crops)", file=sys.stderr)
        det_s, emb_s = parts(paths[: min(len(paths), 16)], detector=detector, embedder=embedder, opts=opts, device=device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    out = {
        "detector": det_name,
        "detector_reason": det_why,
        "model": args.model,
        "device": device if not device.startswith("cuda") else f"{device} ({torch.cuda.get_device_name(0)})",
        "device_reason": why,
        "batch_size": batch,
        "workers": workers,
        "photos": count,
        "faces_pasted": faces,
        "crops": crops_seen,
        "pipeline_crops_s": round(max(pipe), 2),
        "baseline_crops_s": round(max(base), 2),
        "speedup": round(max(pipe) / max(base), 3),
        "pipeline_photos_s": round(max(pipe) * count / max(crops_seen, 1), 2),
        "detect_only_img_s": round(det_s, 2),
        "embed_only_crops_s": round(emb_s, 2),
        "rounds_pipeline": [round(x, 2) for x in pipe],
        "rounds_baseline": [round(x, 2) for x in base],
        "stage_seconds_last_round": timings[-1],
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_children_mib": peak_rss_mib(children=True),
        "peak_gpu_mib": round(peak_gpu, 1),
        "generate_s": round(gen_s, 1),
    }
    emit_result(out, args.out)
    return out


if __name__ == "__main__":
    main()
