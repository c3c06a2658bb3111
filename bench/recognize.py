"""Recognition: the FAISS index against exact search, and images through the real server.

Index only (``--part index``), for random unit vectors of dimension 768 (100k and 1M by default)
and for a real labelled set (COIL-100 embeddings): the index Corral chooses (factory string and
search knobs tuned by ``corral index build``) against exact search (``IndexFlatIP``) in the same
run -- recall@1 against exact, single-query p50 / p99 latency (one thread, wall clock and CPU
time), batch throughput (batches of 1,000), build time and memory. Two query sets: *near*
queries (stored vectors moved to cosine 0.8, the way a new photo of a known thing sits near its
stored images; their exact answer is the source vector) and *random* queries (fresh random unit
vectors, the worst case for any approximate index: every stored vector is about equally far).

End to end (``--part e2e``), per data set (ORL faces, COIL-100 subset): 20% of the classes are
left out of the index, 30% of the other classes' images are held back, the rest are labelled
in a label store and ``build_index`` runs (threshold calibrated on that data only). The held
back and left-out images are then posted to a real ``corral serve --recognize-only`` process on
127.0.0.1: accuracy (held-back images named right), unknown rate (left-out images answered
"unknown"), images per second and request latency; the baseline in the same run is the same
images decoded and embedded in-process without HTTP. A vector load test (bounded in count and
time) reports throughput and p50 / p99 with the error count.

    python bench/recognize.py --out bench/out/recognize-cpu.json         # everything (~15 min on 2 cores)
    python bench/recognize.py --part index --sizes 100000
    python bench/recognize.py --part e2e --cache /tmp/corral-bench-recognize
    python bench/recognize.py --part pose --out bench/results/recognize_pose.json
    python bench/recognize.py --part pose --using index,learnt --calibrations runs --out bench/results/recognize_learnt.json

Unseen poses (``--part pose``, :mod:`bench.recognize_pose`): known classes queried with a run of
views the index has not seen (a 90-degree arc of a turntable, a run of look-alike photos) instead
of random held-back images, with the "unknown" threshold calibrated on runs of neighbours (the
default) and on random items, in the same run. ``--using index,learnt`` adds the learnt head (the
curation loop's model, ``corral index build --using learnt``) on the same index and splits: the
index's answers against the learnt ones in one run.

Last stdout line: one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# OpenMP threads that spin while they wait (GNU's default) starve each other on a small shared
# machine: FAISS training measured 20x slower here. It must be set before torch or FAISS load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import emit_result, peak_rss_mib, provenance  # noqa: E402

DATA = Path(os.environ.get("CORRAL_SHARED", REPO.parent / "shared")) / "data"


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1e3, 3) if values else 0.0


# ------------------------------------------------------------------------------------------
# Index only


def unit_random(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        b = rng.standard_normal((min(100_000, n - s), dim), dtype=np.float32)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        x[s : s + len(b)] = b
    return x


def single_latency(index: Any, queries: np.ndarray, k: int = 10) -> dict[str, float]:
    """One query at a time on one thread (a service answers many requests side by side)."""
    import faiss

    faiss.omp_set_num_threads(1)
    wall, cpu = [], []
    try:
        index.search(queries[:1], k)
        for i in range(len(queries)):
            t0, c0 = time.perf_counter(), time.thread_time()
            index.search(queries[i : i + 1], k)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
    finally:
        faiss.omp_set_num_threads(os.cpu_count() or 1)
    return {"p50_ms": pct(wall, 50), "p99_ms": pct(wall, 99), "cpu_p50_ms": pct(cpu, 50), "cpu_p99_ms": pct(cpu, 99), "queries": len(queries)}


def batch_qps(index: Any, queries: np.ndarray, k: int = 10) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    _, ids = index.search(queries, k)
    return round(len(queries) / (time.perf_counter() - t0), 1), ids


def bench_index(x: np.ndarray, *, near: np.ndarray, near_truth: np.ndarray | None, rand: np.ndarray, factory: str | None, label: str, exact_singles: int) -> dict[str, Any]:
    """Our chosen index vs exact search over ``x`` (freed by the caller)."""
    import faiss

    from corral.storage.index import create_index, recommend_factory, train_index, tune_search

    n, dim = x.shape
    chosen = factory or recommend_factory(n, dim)
    log(f"{label}: {n} x {dim}, chosen index {chosen}")
    rss0 = rss_mib()
    t0 = time.perf_counter()
    index = create_index(chosen, dim)
    t_train = train_index(index, x)
    t1 = time.perf_counter()
    for s in range(0, n, 100_000):
        index.add(x[s : s + 100_000])
    t_add = time.perf_counter() - t1
    t1 = time.perf_counter()
    tuning = tune_search(index, x, target_recall=0.95)
    t_tune = time.perf_counter() - t1
    build_s = time.perf_counter() - t0
    index_mib = rss_mib() - rss0
    log(f"{label}: built in {build_s:.1f}s (train {t_train:.1f}s, add {t_add:.1f}s, tune {t_tune:.1f}s), knobs {tuning.get('params')}")
    down = faiss.downcast_index(index)
    if chosen == "Flat":
        exact, exact_note = index, "the chosen index is exact"
    elif isinstance(down, faiss.IndexRefine):
        exact, exact_note = faiss.downcast_index(down.refine_index), "IndexFlatIP holding the same vectors (the refine stage's own copy)"
    else:
        exact, exact_note = faiss.IndexFlatIP(dim), "IndexFlatIP"
        exact.add(x)
    t1 = time.perf_counter()
    exact_qps, exact_near = batch_qps(exact, near)
    log(f"{label}: exact batch of {len(near)} in {time.perf_counter() - t1:.1f}s")
    _, exact_rand = exact.search(rand, 1)
    ours_qps, ours_near = batch_qps(index, near)
    _, ours_rand = index.search(rand, 1)
    out = {
        "n": n,
        "dim": dim,
        "factory": chosen,
        "search_params": tuning.get("params", {}),
        "build_s": round(build_s, 2),
        "train_s": round(t_train, 2),
        "add_s": round(t_add, 2),
        "tune_s": round(t_tune, 2),
        "index_rss_mib": round(index_mib, 1),
        "recall_at_1_near": round(float((ours_near[:, 0] == exact_near[:, 0]).mean()), 4),
        "recall_at_1_random": round(float((ours_rand[:, 0] == exact_rand[:, 0]).mean()), 4),
        "near_queries_exact_is_source": None if near_truth is None else round(float((exact_near[:, 0] == near_truth).mean()), 4),
        "batch_1000_qps": {"ours": ours_qps, "exact": exact_qps},
        "single": {"ours": single_latency(index, near[:300]), "exact": single_latency(exact, near[:exact_singles])},
        "exact_baseline": exact_note,
    }
    out["speedup_single_p50"] = round(out["single"]["exact"]["p50_ms"] / max(out["single"]["ours"]["p50_ms"], 1e-6), 1)
    log(
        f"{label}: recall@1 near {out['recall_at_1_near']}, random {out['recall_at_1_random']}; "
        f"single p50/p99 {out['single']['ours']['p50_ms']}/{out['single']['ours']['p99_ms']} ms (exact {out['single']['exact']['p50_ms']} ms)"
    )
    return out


def part_index(sizes: list[int], dim: int, cache: Path) -> dict[str, Any]:
    from corral.storage.index import perturb

    out: dict[str, Any] = {"random": []}
    for n in sizes:
        x = unit_random(n, dim, seed=n)
        rng = np.random.default_rng(1)
        src = rng.choice(n, 1000, replace=False)
        near = perturb(x[src], similarity=0.8, rng=rng)
        rand = unit_random(300, dim, seed=7)
        out["random"].append(bench_index(x, near=near, near_truth=src, rand=rand, factory=None, label=f"random {n}", exact_singles=100 if n <= 200_000 else 30))
        del x
    # a real labelled set: held-out COIL-100 images against the rest
    ws = cache / "coil100_subset"
    if (ws / "embeddings").is_dir():
        from corral.storage.workspace import Workspace

        ids, vecs = Workspace(ws).default_embedding_set().load()
        rng = np.random.default_rng(0)
        order = rng.permutation(len(ids))
        q, ref = vecs[order[: len(ids) // 5]], vecs[order[len(ids) // 5 :]]
        real = {"data": "coil100_subset, tf_efficientnet_lite0 embeddings (1280-d)"}
        real["chosen"] = bench_index(ref, near=q, near_truth=None, rand=unit_random(100, vecs.shape[1], 3), factory=None, label="coil100 chosen", exact_singles=100)
        real["ivf_pq_forced"] = bench_index(ref, near=q, near_truth=None, rand=unit_random(100, vecs.shape[1], 3), factory="IVF16,PQ320x4fs,RFlat", label="coil100 IVF-PQ", exact_singles=100)
        out["real"] = real
    else:
        out["real"] = {"skipped": f"no embedded COIL-100 in {ws}; run --part e2e first"}
    return out


# ------------------------------------------------------------------------------------------
# End to end


def dataset_split(root: Path, *, seed: int = 0, left_out: float = 0.2, held_back: float = 0.3) -> tuple[dict[str, list[Path]], dict[str, list[Path]], dict[str, list[Path]]]:
    """(labelled, held back, left out) images per class."""
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    out_classes = set(rng.choice(classes, size=max(1, round(left_out * len(classes))), replace=False).tolist())
    lab, back, out = {}, {}, {}
    for c in classes:
        imgs = sorted((root / c).glob("*.png"))
        if c in out_classes:
            out[c] = imgs
            continue
        idx = rng.permutation(len(imgs))
        n = max(1, round(held_back * len(imgs)))
        back[c] = [imgs[i] for i in sorted(idx[:n])]
        lab[c] = [imgs[i] for i in sorted(idx[n:])]
    return lab, back, out


def start_server(ws: Path, port: int) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "corral", "-q", "serve", "--recognize-only", "--from", str(ws), "--port", str(port), "--reload-interval", "0", "--device", "cpu", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start in 180 s")


def post_images(url: str, paths: list[Path], *, concurrency: int = 16, per_request: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import httpx

    chunks = [paths[i : i + per_request] for i in range(0, len(paths), per_request)]
    lat: list[float] = []
    errors: list[str] = []

    def one(chunk: list[Path]) -> list[dict[str, Any]]:
        with httpx.Client(timeout=120) as http:
            t0 = time.perf_counter()
            r = http.post(url + "/api/recognize", files=[("image", (p.name, p.read_bytes(), "image/png")) for p in chunk])
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors.append(r.text[:200])
                return [{"status": r.status_code}] * len(chunk)
            return r.json()["results"]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for rs in pool.map(one, chunks) for r in rs]
    wall = time.perf_counter() - t0
    errors += [r.get("error", "") for r in results if r.get("status") != 200]
    return results, {
        "images": len(paths),
        "requests": len(chunks),
        "seconds": round(wall, 2),
        "img_s": round(len(paths) / wall, 2),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "errors": len(errors),
        "concurrency": concurrency,
    }


def vector_load(url: str, vectors: np.ndarray, *, count: int, seconds: float, concurrency: int = 8) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    errors: list[int] = []
    stop = time.perf_counter() + seconds
    sent = iter(range(count))

    def worker(w: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            for i in sent:
                if time.perf_counter() > stop:
                    return
                t0 = time.perf_counter()
                r = http.post("/api/recognize", content=vectors[i % len(vectors)].astype("<f4").tobytes(), headers={"Content-Type": "application/octet-stream"})
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200 or r.json()["results"][0]["status"] != 200:
                    errors.append(r.status_code)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - t0
    return {
        "requests": len(lat),
        "bound": {"count": count, "seconds": seconds},
        "seconds": round(wall, 2),
        "rps": round(len(lat) / wall, 1),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "errors": len(errors),
        "concurrency": concurrency,
    }


def part_e2e(name: str, model: str, cache: Path, port: int) -> dict[str, Any]:
    from corral.pipeline.embed import EmbedConfig, embed
    from corral.pipeline.recognize import ImageEncoder
    from corral.storage.index_build import build_index
    from corral.storage.labels import LabelStore
    from corral.storage.workspace import Workspace

    root = DATA / name / "images"
    lab, back, out = dataset_split(root)
    embedded = cache / (name if model == "timm:tf_efficientnet_lite0" else f"{name}-{model.replace(':', '_')}")
    t0 = time.perf_counter()
    res = embed(str(root), workspace=embedded, config=EmbedConfig(model=model, progress=False))
    log(f"{name}/{model}: embeddings ready ({res.embedded} new, {res.already_done} cached) in {time.perf_counter() - t0:.0f}s")
    run = cache / f"run-{name}-{model.replace(':', '_')}"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(embedded / "embeddings", run / "embeddings")
    ws = Workspace(run)
    items = ws.items()
    id_of = dict(zip(items.column("uri").to_pylist(), items.column("id").to_pylist()))
    store = LabelStore.open(ws)
    for cls, paths in lab.items():
        store.assign([id_of[str(p.resolve())] for p in paths], cls, user="bench")
    store.close()
    t0 = time.perf_counter()
    built = build_index(workspace=ws)
    build_s = time.perf_counter() - t0
    log(f"{name}/{model}: index built in {build_s:.1f}s, threshold {built.threshold:.4f}, calibration {built.calibration.get('at_threshold')}")
    queries = [(p, c) for c, ps in back.items() for p in ps] + [(p, None) for ps in out.values() for p in ps]
    # baseline: the same images decoded and embedded in-process, no HTTP
    enc = ImageEncoder(model=built.model, device="cpu")
    t0 = time.perf_counter()
    for s in range(0, len(queries), 32):
        enc.embed([enc.decode(p.read_bytes()) for p, _ in queries[s : s + 32]])
    inproc = len(queries) / (time.perf_counter() - t0)
    del enc
    proc = start_server(run, port)
    try:
        url = f"http://127.0.0.1:{port}"
        results, http_stats = post_images(url, [p for p, _ in queries])
        ids, vecs = ws.default_embedding_set().load()
        load = vector_load(url, vecs, count=3000, seconds=30)
    finally:
        proc.terminate()
        proc.wait(30)
    known = [(r, c) for r, (_, c) in zip(results, queries) if c is not None]
    unknown = [r for r, (_, c) in zip(results, queries) if c is None]
    acc = float(np.mean([r.get("label") == c for r, c in known]))
    unk = float(np.mean([r.get("status") == 200 and r.get("label") is None for r in unknown]))
    closed = float(np.mean([bool(r.get("top")) and r["top"][0][0] == c for r, c in known]))
    log(f"{name}/{model}: accuracy {acc:.3f} (closed-set top-1 {closed:.3f}), unknown {unk:.3f}; {http_stats['img_s']} img/s through the server vs {inproc:.1f} in-process")
    return {
        "data": name,
        "model": built.model,
        "classes_in_index": len(lab),
        "classes_left_out": len(out),
        "labelled_images": sum(len(v) for v in lab.values()),
        "held_back_images": len(known),
        "left_out_images": len(unknown),
        "accuracy": round(acc, 4),
        "unknown_rate_left_out": round(unk, 4),
        "closed_set_top1": round(closed, 4),
        "threshold": built.threshold,
        "calibration": built.calibration,
        "index_build_s": round(build_s, 2),
        "server_images": http_stats,
        "in_process_img_s": round(inproc, 2),
        "server_vs_in_process": round(http_stats["img_s"] / inproc, 3),
        "vector_load_test": load,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("all", "index", "e2e", "pose"), default="all")
    ap.add_argument("--sizes", default="100000,1000000", help="random set sizes for the index part (comma separated)")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--cache", default="/tmp/corral-bench-recognize", help="embedded data sets are kept here between runs")
    ap.add_argument("--port", type=int, default=18931, help="port of the server started for the end-to-end part")
    ap.add_argument("--face-model", default="dlib:face-resnet", help="also run ORL with this face embedder ('' to skip)")
    ap.add_argument("--datasets", default="coil100_subset,orl_faces", help="data sets of the end-to-end part (comma separated)")
    ap.add_argument("--pose-datasets", default="coil20,coil100_subset,orl_faces", help="data sets of the unseen-pose part (comma separated)")
    ap.add_argument("--using", default="index", help="pose part: 'index,learnt' also scores the learnt head on the same index and splits")
    ap.add_argument("--calibrations", default="runs,random", help="pose part: how the unknown threshold is calibrated (comma separated; the first also gets the learnt head)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    import faiss
    import torch

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "bench": "recognize",
        **provenance(),
        "machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "faiss": faiss.__version__, "torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "gpu": {"faiss_gpus": faiss.get_num_gpus(), "cuda": torch.cuda.is_available()},
    }
    if faiss.get_num_gpus() == 0:
        result["gpu"]["note"] = "no GPU here: GPU figures were not measured (the GPU paths run when faiss.get_num_gpus() > 0)"
    if args.part in ("all", "e2e"):
        names = [d for d in args.datasets.split(",") if d]
        runs = [(d, "timm:tf_efficientnet_lite0") for d in names]
        if args.face_model and "orl_faces" in names:
            runs.append(("orl_faces", args.face_model))
        result["end_to_end"] = [part_e2e(n, m, cache, args.port + i) for i, (n, m) in enumerate(runs)]
    if args.part in ("all", "pose"):
        from bench.recognize_pose import part_pose

        names = [d for d in args.pose_datasets.split(",") if d]
        runs = [(d, "timm:tf_efficientnet_lite0") for d in names]
        if args.face_model and "orl_faces" in names:
            runs.append(("orl_faces", args.face_model))
        usings = tuple(u for u in args.using.split(",") if u)
        groupings = tuple(g for g in args.calibrations.split(",") if g)
        result["pose"] = [part_pose(n, m, DATA, cache, groupings=groupings, usings=usings) for n, m in runs]
    if args.part in ("all", "index"):
        result["index"] = part_index([int(s) for s in args.sizes.split(",") if s], args.dim, cache)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["peak_rss_mib"] = peak_rss_mib()
    result["peak_rss_server_mib"] = peak_rss_mib(children=True)
    emit_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
