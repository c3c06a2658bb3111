"""Would better features name what the loop leaves on the pixel sets? The loop's model on the map's
features against a small convolutional network trained on the labelled images themselves, on the
items a curator's lassos leave.

On MNIST and Fashion-MNIST (embedded as raw pixels, ``pixels:28``) the loop helps least: every
class is named within the first few dozen actions, and what is left are the items whose neighbours
carry another label. ``docs/learn.md`` says a model on the same features cannot name most of them.
Would a model that learns its own features from the labels do better? This measures it in one run,
on the same labels:

* *what is left*: the ``--left`` share of the items whose 10 nearest neighbours (cosine, pixels
  reduced to 50 dimensions by PCA) least often carry their own label, a stand-in for what the
  lassos leave (the rest are labelled with their true class);
* *the loop's model*: ``corral.pipeline.learn.learn`` on the pixels (PCA to 128, the three models
  out of fold, the one with the lower held-out log loss serves; its SVM sees 3,000 rows at most);
* *a small CNN* (two 3x3 convolution layers of 32 and 64 channels, max-pooling, a 128-unit layer,
  dropout 0.3) trained on every labelled image for ``--epochs`` epochs with random shifts of up
  to 2 pixels (Adam, learning rate 1e-3, batches of 128), seeded; on the CPU.

Both are scored on what is left against the truth: the share right, and the share right among the
25% and 50% of those items each is surest of (its own ranking: the loop's calibrated confidence,
the network's top softmax probability), which is what a suggested group or a review page would
take. The stand-in leans towards the network: the items are chosen by their *pixel* neighbours.

    python bench/learn_features.py --data ../shared/data --datasets mnist_test fashion_mnist
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import emit_result, peak_rss_mib, provenance  # noqa: E402
from bench.curate_data import DATASETS, read_idx  # noqa: E402


def hardest(x: np.ndarray, y: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Rows of the ``share`` of items whose 10 nearest neighbours least often share their label."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    f = PCA(50, random_state=seed).fit_transform(x)
    f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    nb = NearestNeighbors(n_neighbors=11).fit(f).kneighbors(f, return_distance=False)[:, 1:]
    agree = (y[nb] == y[:, None]).mean(1) + np.random.default_rng(seed).random(len(y)) * 1e-6  # ties at random
    return np.sort(np.argsort(agree, kind="stable")[: int(round(share * len(y)))])


def scores(right: np.ndarray, sure: np.ndarray) -> dict[str, float]:
    """Share right on all, and on the surest 25% and 50% (by ``sure``)."""
    order = np.argsort(-sure, kind="stable")
    out = {"right": round(float(right.mean()), 4)}
    for q in (25, 50):
        top = order[: max(1, len(order) * q // 100)]
        out[f"right_in_surest_{q}pct"] = round(float(right[top].mean()), 4)
    return out


def loop_model(x: np.ndarray, y: np.ndarray, left: np.ndarray) -> dict:
    from corral.pipeline.learn import learn

    labels: list[str | None] = [str(v) for v in y]
    for r in left:
        labels[r] = None
    t0 = time.perf_counter()
    res = learn(vectors=x, labels=labels)
    pred = np.asarray([int(res.classes[k]) for k in res.predicted[left]])
    return {"model": res.model, "heldout_accuracy": round(res.heldout_accuracy, 4), "seconds": round(time.perf_counter() - t0, 1), **scores(pred == y[left], res.confidence[left])}


def cnn(images: np.ndarray, y: np.ndarray, left: np.ndarray, *, epochs: int, seed: int) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    classes = int(y.max()) + 1
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (images.shape[1] // 4) * (images.shape[2] // 4), 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, classes),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    train = np.setdiff1d(np.arange(len(y)), left)
    xt = torch.tensor(images[train], dtype=torch.float32)[:, None] / 255.0
    yt = torch.tensor(y[train], dtype=torch.int64)
    t0 = time.perf_counter()
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            b = perm[i : i + 128]
            dx, dy = (int(v) for v in rng.integers(-2, 3, 2))
            loss = F.cross_entropy(net(torch.roll(xt[b], (dx, dy), (2, 3))), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        p = F.softmax(net(torch.tensor(images[left], dtype=torch.float32)[:, None] / 255.0), 1).numpy()
    return {"epochs": epochs, "seconds": round(time.perf_counter() - t0, 1), **scores(p.argmax(1) == y[left], p.max(1))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("CORRAL_SHARED_DATA", str(REPO.parent / "shared" / "data")), help="folder of the shared sets")
    ap.add_argument("--datasets", nargs="+", default=["mnist_test", "fashion_mnist"], choices=[k for k, v in DATASETS.items() if v[0] == "idx"])
    ap.add_argument("--left", type=float, nargs="+", default=[0.2, 0.3], help="shares of the items left unlabelled (the hardest)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    out: dict = {"bench": "learn_features", **provenance(), "sets": {}}
    for name in a.datasets:
        _, images_rel, labels_rel, _ = DATASETS[name]
        images = read_idx(Path(a.data) / images_rel)
        y = read_idx(Path(a.data) / labels_rel).astype(np.int64)[: len(images)]
        x = images.reshape(len(images), -1).astype(np.float32) / 255.0
        for share in a.left:
            left = hardest(x, y, share, a.seed)
            row = {"items": len(y), "left": len(left), "loop_model": loop_model(x, y, left), "cnn": cnn(images, y, left, epochs=a.epochs, seed=a.seed)}
            out["sets"][f"{name}@{share}"] = row
            print(f"{name} left {share}: loop {row['loop_model']} | cnn {row['cnn']}", file=sys.stderr, flush=True)
    out["peak_rss_mib"] = peak_rss_mib()
    emit_result(out, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
