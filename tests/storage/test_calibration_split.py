"""The recognizer's calibration holds out runs of neighbouring items, not random ones."""

from __future__ import annotations

import numpy as np

from corral.storage.recognizer import split_for_calibration


def test_known_queries_are_runs_of_neighbours_so_their_twins_are_held_out_with_them():
    rng = np.random.default_rng(0)
    classes, pairs = 6, 20
    base = rng.normal(size=(classes * pairs, 32))
    x = np.concatenate([base, base + 0.01 * rng.normal(size=base.shape)])  # every item has a twin
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    codes = np.tile(np.repeat(np.arange(classes), pairs), 2).astype(np.int32)
    twin = np.r_[np.arange(len(base)) + len(base), np.arange(len(base))]

    def twin_share(vectors):
        shares = []
        for seed in range(5):
            _, known, _ = split_for_calibration(codes, holdout=0.2, class_holdout=0.0, seed=seed, vectors=vectors)
            q = np.flatnonzero(known)
            shares.append(float(known[twin[q]].mean()))
        return np.mean(shares)

    assert twin_share(x) > 0.8  # a held-out item's twin is held out too
    assert twin_share(None) < 0.4  # the random split leaves most twins in the reference
