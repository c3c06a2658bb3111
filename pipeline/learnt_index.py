"""The recognition index with the curation loop's model as its head (``corral index build``).

The loop (:mod:`corral.pipeline.learn`) and ``corral suggest`` already name new items with a model
learnt from the labels; this module fits that same model (the same :func:`~corral.pipeline.learn.learn`
call, with ``model="logreg"``: the one model of the loop that is a handful of arrays) on every
labelled item of the index, and hands it to the index build as a
:class:`~corral.storage.learnt_head.LearntHead`, so a recognition service answers with what the
curators taught. The FAISS index's unknown rule still applies: a name needs both (see
``docs/recognition.md``).

With too few labels to learn from (two labels with three items each) the index is built without a
head, saying so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

import numpy as np

from corral.pipeline.learn import Calibrator, DistanceCalibrator, LearnConfig, LearnError, LearnResult, group_folds, learn, nearest_distances, novel_distances, scaling
from corral.storage.index_build import BuildResult, HeadFitter, IndexConfig, build_index, update_index
from corral.storage.learnt_head import LearntHead
from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)

#: Largest difference allowed between the head's features and the loop's own (see :func:`head_from_result`).
MAX_DRIFT = 0.1
#: What ``corral index build --using`` takes: the learnt head (with the index's unknown rule) or the index alone.
USING = ("learnt", "index")


def fit_head(vectors: np.ndarray, labels: list[str | None], *, config: LearnConfig | None = None, combine: str = "both") -> LearntHead:
    """The loop's model fitted on ``labels`` (None for rows without one), as a stored head.

    Raises :class:`~corral.pipeline.learn.LearnError` when the labels cannot teach a model yet.
    """
    cfg = replace(config or LearnConfig(), model="logreg")
    res = learn(vectors=vectors, labels=labels, config=cfg)
    return head_from_result(res, vectors, combine=combine)


def head_from_result(res: LearnResult, vectors: np.ndarray, *, combine: str = "both") -> LearntHead:
    """The arrays that score a new vector as ``res`` scored its unlabelled rows (a logreg round).

    ``learn`` keeps its PCA and classifier to itself, so they are refitted here the way it fits them
    (same settings and seed, same rows). A new vector can only be projected (``(x - mean) @
    components.T``), while the round's own rows come from the randomized SVD's factors, which differ
    from that projection by the SVD's residual (a few hundredths after normalising); so the
    classifier, the labelled features and the distances are refitted on the projected features,
    and the calibrators on the round's out-of-fold answers. The two feature sets are checked to
    agree that closely, so a change of the loop's features is caught here.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    if res.model != "logreg" or res.features is None:
        raise ValueError(f"a stored head is logistic regression on the loop's features; this round used {res.model!r}")
    cfg = res.config
    x = np.asarray(vectors, dtype=np.float32)
    pca_mean = pca_components = None
    if x.shape[1] > cfg.dims and x.shape[0] > cfg.dims:
        pca = PCA(n_components=cfg.dims, random_state=cfg.seed, svd_solver="randomized").fit(x)
        pca_mean, pca_components = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
        z = ((x - pca_mean) @ pca_components.T).astype(np.float32)
        z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    else:
        z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    drift = float(np.abs(z - res.features).max()) if len(z) else 0.0
    if z.shape != res.features.shape or drift > MAX_DRIFT:
        raise RuntimeError(f"the stored head's features differ from the loop's by {drift:.2g}; corral.pipeline.learn.features changed and this module must follow it")
    rows = np.flatnonzero(res.labelled)
    y = res.y[rows]
    mu, sd = scaling(z[rows])
    clf = LogisticRegression(C=cfg.C, max_iter=300).fit((z[rows] - mu) / sd, y)
    raw = res.proba[rows].max(1)
    correct = res.proba[rows].argmax(1) == y
    cal = Calibrator.fit(raw, correct)
    # the held-out rows' distance to the nearest item of their training fold, as the round measured it
    fold = group_folds(z[rows], y, folds=cfg.folds, seed=cfg.seed)
    dist = np.zeros(len(rows))
    for f in range(cfg.folds):
        test, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        if len(test) and len(train):
            dist[test] = nearest_distances(z, rows[train], rows[test])
    dcal = DistanceCalibrator.fit(raw, dist, correct, C=cfg.C)
    head = LearntHead(
        classes=list(res.classes),
        scale_mean=mu.astype(np.float32),
        scale=sd,
        coef=clf.coef_.astype(np.float64),
        intercept=clf.intercept_.astype(np.float64),
        cal_edges=np.asarray(cal.edges, np.float64),
        cal_values=np.asarray(cal.values, np.float64),
        labelled=np.ascontiguousarray(z[rows], dtype=np.float32),
        novel=np.asarray(novel_distances(z, res.y, rows), np.float64),
        threshold=float(res.bar),
        pca_mean=pca_mean,
        pca_components=pca_components,
        dcal_coef=None if dcal is None else np.asarray(dcal.coef, np.float64),
        dcal_intercept=0.0 if dcal is None else float(dcal.intercept),
        combine=combine,
        info={
            "model": "logreg",
            "labelled": int(len(rows)),
            "heldout_accuracy": round(float(res.heldout_accuracy), 4),
            "aim": cfg.aim,
            "dims": int(z.shape[1]),
            "C": cfg.C,
            "seed": cfg.seed,
            "ignored_labels": dict(res.ignored_labels),
        },
    )
    return head


def head_fitter(config: LearnConfig | None = None, *, combine: str = "both") -> HeadFitter:
    """A fitter for :func:`~corral.storage.index_build.build_index`: the head from the index's rows,
    or None (logged) when the labels cannot teach a model yet."""

    def fit(vectors: np.ndarray, labels: list[str | None]) -> LearntHead | None:
        rows = [r for r, lb in enumerate(labels) if lb is not None]
        try:
            return fit_head(vectors[rows], [labels[r] for r in rows], config=config, combine=combine)
        except LearnError as e:
            logger.warning("no learnt head: %s The index answers alone.", e)
            return None

    return fit


def build(*, workspace: str | os.PathLike[str] | Workspace, config: IndexConfig | None = None, using: str = "index", learn_config: LearnConfig | None = None) -> BuildResult:
    """``corral index build``: the index, with the learnt head when ``using="learnt"`` (see
    ``docs/recognition.md`` for why the index alone is the default)."""
    _check_using(using)
    return build_index(workspace=workspace, config=config, head=head_fitter(learn_config) if using == "learnt" else None)


def update(
    *, workspace: str | os.PathLike[str] | Workspace, config: IndexConfig | None = None, recalibrate: bool = True, using: str | None = None, learn_config: LearnConfig | None = None
) -> BuildResult:
    """``corral index update``: the head is refitted on the new labels when the index has one (or
    ``using="learnt"`` asks for it); ``using="index"`` drops it."""
    if using is not None:
        _check_using(using)
    fitter = None if using == "index" else head_fitter(learn_config)
    return update_index(workspace=workspace, config=config, recalibrate=recalibrate, head=fitter, add_head=using == "learnt", drop_head=using == "index")


def _check_using(using: Any) -> None:
    if using not in USING:
        raise ValueError(f"using={using!r}: expected one of {', '.join(USING)}")
