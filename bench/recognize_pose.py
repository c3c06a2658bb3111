"""Recognition on unseen poses: does "unknown" still mean unknown when a known thing is seen anew?

The random split of ``--part e2e`` holds back random images of each known class; on a turntable
set (72 views 5 degrees apart) nearly every held-back view has a neighbour 5 degrees away in the
index, so the queries are easy. A new photo of a known thing is more often a pose or a light the
index has not seen. This part scores that: per set, 20% of the classes are left out (unknowns) and,
of every other class, a *run* of neighbouring images is held back as the known queries; the index
is built (and its threshold calibrated) on the rest only. Splits:

- ``pose_arc`` (COIL-20, COIL-100 subset): a contiguous 90-degree arc of views per object, read
  from the file names (``obj12__35.png`` is view 35), held back whole: the index knows the object
  from the other 270 degrees. The arc's start is random per object.
- ``look_run`` (every set, ORL faces included, which has no pose labels): a random image of each
  person or object and the images most like it in *pixel* space (grey, 32x32), 30% of the class:
  a run of look-alike photos (one session, one light), chosen without the embedder.
- ``random``: 30% of each class's images at random, the easy case, for comparison.

With ``usings=("index", "learnt")`` (``bench/recognize.py --using index,learnt``) each split of the
default calibration is also scored with the learnt head (``corral index build --using learnt``: the
curation loop's model beside the index) on the same index, in the same run: ``index`` (the index's
rule alone), ``learnt`` (a name needs both, unknown when they name different labels: the default),
``learnt_wins`` (the head's label when both name something) and ``head_alone`` (the head's
threshold only, the index's unknown rule ignored: for comparison).

Each split is scored with the threshold calibrated both ways (``RuleConfig.grouping``): ``runs``
(held-out calibration queries are runs of neighbours, the default) and ``random`` (random items,
the earlier rule), on the same index in the same run. Reported per split and calibration: known
queries named right / named wrong / answered "unknown", unknown rejection (left-out classes
answered "unknown"), and their balance ``(named right + rejection) / 2``; three seeds, pooled.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

ARC_DEGREES = 90
SEEDS = tuple(range(int(__import__("os").environ.get("POSE_SEEDS", "3"))))
VIEW = re.compile(r"__(\d+)\.png$")


def log(msg: str) -> None:
    import sys

    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def pixels(paths: list[Path]) -> np.ndarray:
    """Grey 32x32 thumbnails as unit vectors (the embedder plays no part in the look split)."""
    from PIL import Image

    out = np.stack([np.asarray(Image.open(p).convert("L").resize((32, 32)), dtype=np.float32).ravel() for p in paths])
    out -= out.mean(1, keepdims=True)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


def split(kind: str, classes: dict[str, list[Path]], *, seed: int, left_out: float = 0.2, share: float = 0.3) -> tuple[dict[str, list[Path]], dict[str, list[Path]], dict[str, list[Path]]]:
    """(indexed, known queries, left out) images per class for one split kind."""
    rng = np.random.default_rng(seed)
    names = sorted(classes)
    out_names = set(rng.choice(names, size=max(1, round(left_out * len(names))), replace=False).tolist())
    lab: dict[str, list[Path]] = {}
    qry: dict[str, list[Path]] = {}
    out: dict[str, list[Path]] = {}
    for c in names:
        imgs = sorted(classes[c])
        if c in out_names:
            out[c] = imgs
            continue
        n = max(1, round(share * len(imgs)))
        if kind == "random":
            held = set(rng.choice(len(imgs), size=n, replace=False).tolist())
        elif kind == "look_run":
            px = pixels(imgs)
            anchor = int(rng.integers(len(imgs)))
            held = set(np.argsort(-(px @ px[anchor]), kind="stable")[:n].tolist())
        elif kind == "pose_arc":
            deg = [turntable_degrees(p.name, len(imgs)) for p in imgs]
            start = float(rng.uniform(0, 360))
            held = {i for i, d in enumerate(deg) if (d - start) % 360 < ARC_DEGREES}
        else:
            raise ValueError(kind)
        qry[c] = [p for i, p in enumerate(imgs) if i in held]
        lab[c] = [p for i, p in enumerate(imgs) if i not in held]
    return lab, qry, out


def turntable_degrees(name: str, views: int) -> float:
    """View angle of ``obj__N.png``: N counts views when a class has 72 of them, else degrees."""
    m = VIEW.search(name)
    if not m:
        raise ValueError(f"{name}: not a turntable view name (obj__N.png)")
    v = int(m.group(1))
    return v * 5.0 if views == 72 else float(v)


def score(rec: Any, vecs: np.ndarray, known: list[tuple[int, str]], unknown: list[int]) -> dict[str, Any]:
    """Named right / wrong / unknown for the known queries, rejection for the left-out ones."""
    from corral.storage.recognizer import choose_threshold

    kd = rec.recognize(vecs[[r for r, _ in known]]) if known else []
    ud = rec.recognize(vecs[unknown]) if unknown else []
    right = sum(d.label == c for d, (_, c) in zip(kd, known))
    unk = sum(d.label is None for d in kd)
    wrong = len(kd) - right - unk
    rej = sum(d.label is None for d in ud)
    # the best balance any threshold could reach on these very queries (chosen on them: a bound, not a result)
    ks = np.array([d.margin for d in kd])
    ok = np.array([d.top[0][0] == c if d.top else False for d, (_, c) in zip(kd, known)])
    us = np.array([d.margin for d in ud])
    t = choose_threshold(ks, ok, us)
    best = ((ok & (ks >= t)).sum() / max(len(ks), 1) + (us < t).sum() / max(len(us), 1)) / 2
    return {"known": len(kd), "right": right, "wrong": wrong, "unknown": unk, "left_out": len(ud), "rejected": rej, "oracle_balanced_x1000": int(round(1000 * best))}


#: How the learnt head and the index's rule make one answer, scored side by side (see the module docstring).
VARIANTS = ("index", "learnt", "learnt_wins", "head_alone")


def variant_label(d: Any, variant: str, bar: float) -> str | None:
    """The answer ``variant`` gives from one decision of a recognizer with a learnt head."""
    sure = d.confidence is not None and d.confidence >= bar
    if variant == "index":
        return d.index_label
    if variant == "head_alone":
        return d.learnt if sure else None
    if not sure or d.index_label is None:
        return None
    return d.learnt if variant == "learnt_wins" or d.learnt == d.index_label else None


def score_variants(rec: Any, vecs: np.ndarray, known: list[tuple[int, str]], unknown: list[int]) -> dict[str, dict[str, int]]:
    """Named right / wrong / unknown and rejection per variant, from one pass of the learnt recognizer."""
    kd = rec.recognize(vecs[[r for r, _ in known]]) if known else []
    ud = rec.recognize(vecs[unknown]) if unknown else []
    bar = rec.head.threshold
    out = {}
    for v in VARIANTS:
        kl = [variant_label(d, v, bar) for d in kd]
        right = sum(lb == c for lb, (_, c) in zip(kl, known))
        unk = sum(lb is None for lb in kl)
        out[v] = {"known": len(kd), "right": right, "wrong": len(kd) - right - unk, "unknown": unk, "left_out": len(ud), "rejected": sum(variant_label(d, v, bar) is None for d in ud)}
    return out


def rates(c: dict[str, int], seeds: int) -> dict[str, float]:
    c = dict(c)
    oracle = c.pop("oracle_balanced_x1000", 0) / 1000 / max(seeds, 1)
    right = c["right"] / c["known"] if c["known"] else 0.0
    rej = c["rejected"] / c["left_out"] if c["left_out"] else 0.0
    return {
        "known_named_right": round(right, 4),
        "known_named_wrong": round(c["wrong"] / c["known"], 4) if c["known"] else 0.0,
        "known_answered_unknown": round(c["unknown"] / c["known"], 4) if c["known"] else 0.0,
        "unknown_rejection": round(rej, 4),
        "balanced": round((right + rej) / 2, 4),
        "best_possible_balanced": round(oracle, 4),  # threshold chosen on the test queries themselves
        **c,
    }


def part_pose(name: str, model: str, data: Path, cache: Path, *, groupings: tuple[str, ...] = ("runs", "random"), usings: tuple[str, ...] = ("index",)) -> dict[str, Any]:
    """Every split kind of one set, each calibrated every way, pooled over ``SEEDS``; with
    ``"learnt"`` in ``usings``, the first grouping's index also carries the learnt head and every
    variant of :data:`VARIANTS` is scored on it."""
    from corral.pipeline.embed import EmbedConfig, embed
    from corral.pipeline.learnt_index import head_fitter
    from corral.pipeline.recognize import load_recognizer
    from corral.storage.index_build import IndexConfig, build_index
    from corral.storage.labels import LabelStore
    from corral.storage.index import LabelIndex
    from corral.storage.recognizer import Recognizer, RuleConfig
    from corral.storage.workspace import Workspace

    root = data / name / "images"
    classes = {p.name: sorted(p.glob("*.png")) for p in sorted(root.iterdir()) if p.is_dir()}
    embedded = cache / (name if model == "timm:tf_efficientnet_lite0" else f"{name}-{model.replace(':', '_')}")
    t0 = time.perf_counter()
    embed(str(root), workspace=embedded, config=EmbedConfig(model=model, progress=False))
    log(f"pose {name}/{model}: embeddings ready in {time.perf_counter() - t0:.0f}s")
    src = Workspace(embedded)
    ids, vecs = src.default_embedding_set().load()
    row_of_id = {i: r for r, i in enumerate(ids)}
    items = src.items()
    row_of = {u: row_of_id[i] for u, i in zip(items.column("uri").to_pylist(), items.column("id").to_pylist()) if i in row_of_id}
    kinds = (["pose_arc"] if VIEW.search(next(iter(classes.values()))[0].name) else []) + ["look_run", "random"]
    out: dict[str, Any] = {"data": name, "model": model, "classes": len(classes), "images": sum(len(v) for v in classes.values()), "splits": {}}
    for kind in kinds:
        pooled: dict[str, dict[str, int]] = {g: {} for g in groupings}
        thresholds: dict[str, list[float]] = {g: [] for g in groupings}
        predicted: dict[str, list[tuple[float, float]]] = {g: [] for g in groupings}
        learnt: dict[str, dict[str, int]] = {v: {} for v in VARIANTS}
        head_s: list[float] = []
        bars: list[float] = []
        for seed in SEEDS:
            lab, qry, left = split(kind, classes, seed=seed)
            known = [(row_of[str(p.resolve())], c) for c, ps in qry.items() for p in ps]
            unknown = [row_of[str(p.resolve())] for ps in left.values() for p in ps]
            for g in groupings:
                run = cache / f"pose-{name}-{model.replace(':', '_')}"
                shutil.rmtree(run, ignore_errors=True)
                shutil.copytree(embedded / "embeddings", run / "embeddings")
                ws = Workspace(run)
                id_of = dict(zip(ws.items().column("uri").to_pylist(), ws.items().column("id").to_pylist()))
                store = LabelStore.open(ws)
                for c, ps in lab.items():
                    store.assign([id_of[str(p.resolve())] for p in ps], c, user="bench")
                store.close()
                with_head = "learnt" in usings and g == groupings[0]
                built = build_index(workspace=ws, config=IndexConfig(rule=RuleConfig(grouping=g)), head=head_fitter() if with_head else None)
                thresholds[g].append(built.threshold)
                if with_head:
                    rec = load_recognizer(run)
                    if rec.head is None:
                        raise RuntimeError(f"{name}: no learnt head was fitted")
                    head_s.append(built.timings.get("head_s", 0.0))
                    bars.append(rec.head.threshold)
                    for v, counts in score_variants(rec, vecs, known, unknown).items():
                        for k, n in counts.items():
                            learnt[v][k] = learnt[v].get(k, 0) + n
                at = (built.calibration or {}).get("at_threshold") or {}
                predicted[g].append((at.get("recall") or 0.0, at.get("unknown_rejection") or 0.0))
                got = score(Recognizer(LabelIndex.load(run), using="index"), vecs, known, unknown)  # the index's rule alone, as before
                for k, v in got.items():
                    pooled[g][k] = pooled[g].get(k, 0) + v
        out["splits"][kind] = {
            g: {
                **rates(pooled[g], len(SEEDS)),
                # what the calibration itself expected at its threshold (mean over seeds): an honest
                # calibration predicts the measured figures above
                "calibration_expected": {"known_named_right": round(float(np.mean([a for a, _ in predicted[g]])), 4), "unknown_rejection": round(float(np.mean([b for _, b in predicted[g]])), 4)},
                "thresholds": [round(t, 4) for t in thresholds[g]],
            }
            for g in groupings
        }
        if "learnt" in usings:
            out["splits"][kind]["using"] = {
                "calibration": groupings[0],
                "learnt_bars": [round(b, 4) for b in bars],
                "head_fit_s": [round(t, 2) for t in head_s],
                **{v: {k: r for k, r in rates(learnt[v], len(SEEDS)).items() if k != "best_possible_balanced"} for v in VARIANTS},
            }
            u = out["splits"][kind]["using"]
            parts = [f"{v} right {u[v]['known_named_right']:.3f} wrong {u[v]['known_named_wrong']:.3f} rejection {u[v]['unknown_rejection']:.3f}" for v in VARIANTS]
            log(f"pose {name}/{kind}, index vs learnt: " + "; ".join(parts))
        for g, r in out["splits"][kind].items():
            if g == "using":
                continue
            exp = r["calibration_expected"]
            log(
                f"pose {name}/{kind}, calibrated on {g}: known right {r['known_named_right']:.3f} (expected {exp['known_named_right']:.3f}), wrong {r['known_named_wrong']:.3f}, "
                f"unknown {r['known_answered_unknown']:.3f}; rejection {r['unknown_rejection']:.3f} (expected {exp['unknown_rejection']:.3f})"
                f"; balanced {r['balanced']:.3f} of {r['best_possible_balanced']:.3f}"
            )
    return out
