"""The learnt head of a recognition index: the curation loop's model, stored as plain arrays.

``corral index build`` (with ``--using learnt``, the default) fits the model the curation loop and
``corral suggest`` use (:func:`corral.pipeline.learn.learn`: multinomial logistic regression on PCA
features of the embeddings, a calibrated confidence that is lowered far from every labelled item)
on every label in the index, and stores what it needs to score a new vector without refitting:

* the PCA (``pca_mean``, ``pca_components``; absent when the features are the embeddings
  themselves, as for fewer items than PCA dimensions), after which a row is L2-normalised;
* the logistic regression (``scale_mean``, ``scale``, ``coef``, ``intercept``): features minus
  ``scale_mean``, divided by ``scale``, then ``coef @ z + intercept`` (softmax over the labels; a
  single row of ``coef`` is a two-label model: its sigmoid is the second label's probability);
* the two calibrators of the loop: isotonic steps (``cal_edges``, ``cal_values``) and Platt
  scaling on the top probability and the distance to the nearest labelled item (``dcal_coef``,
  ``dcal_intercept``; absent when the held-out answers were all right);
* the labelled items' features (``labelled``) for that distance, and the sorted distances of
  labels held out whole (``novel``): a query's confidence is multiplied by the share of those that
  are larger than its own distance, as an item of a label nobody has named lies farther away.

Only logistic regression is stored: label spreading needs the whole graph and a kernel SVM its
support vectors and kernel, neither a few arrays; a head is always fitted with ``model="logreg"``.
The arrays go into ``head-<gen>.npz`` (``numpy.load(..., allow_pickle=False)`` reads it) and the
label names, the confidence threshold and how the head was fitted into ``index.json``'s ``head``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HEAD_FORMAT = "corral-learnt-head/1"
#: How the learnt head and the index's unknown rule make one answer (see :meth:`LearntHead.combine`).
COMBINES = ("both", "learnt")
_ARRAYS = ("scale_mean", "coef", "intercept", "cal_edges", "cal_values", "labelled", "novel")
_OPTIONAL = ("pca_mean", "pca_components", "dcal_coef")


@dataclass
class HeadAnswer:
    """The learnt head's answer for each query."""

    predicted: np.ndarray  # [n] label index (into ``classes``)
    proba: np.ndarray  # [n, labels] the model's probabilities
    confidence: np.ndarray  # [n] calibrated chance that ``predicted`` is right (novelty included)
    distance: np.ndarray  # [n] to the nearest labelled item in the head's features


@dataclass
class LearntHead:
    """The arrays of the learnt head (see the module docstring) plus its decision threshold."""

    classes: list[str]
    scale_mean: np.ndarray
    scale: float
    coef: np.ndarray
    intercept: np.ndarray
    cal_edges: np.ndarray
    cal_values: np.ndarray
    labelled: np.ndarray
    novel: np.ndarray
    threshold: float  # a name needs at least this calibrated confidence
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None
    dcal_coef: np.ndarray | None = None
    dcal_intercept: float = 0.0
    combine: str = "both"  # see COMBINES
    info: dict[str, Any] = field(default_factory=dict)  # how it was fitted (model, held-out accuracy, aim, ...)

    def __post_init__(self) -> None:
        if self.combine not in COMBINES:
            raise ValueError(f"combine={self.combine!r}: expected one of {', '.join(COMBINES)}")
        n_out = 2 if len(self.coef) == 1 else len(self.coef)
        if n_out != len(self.classes) or len(self.classes) < 2:
            raise ValueError(f"the head's model has {n_out} outputs for {len(self.classes)} labels")
        if not 0.0 < float(self.threshold) <= 1.0:
            raise ValueError(f"threshold={self.threshold!r}: expected a confidence in (0, 1]")

    @property
    def dim(self) -> int:
        """Dimension of the embeddings the head takes."""
        return int(self.pca_components.shape[1]) if self.pca_components is not None else int(self.labelled.shape[1])

    def features(self, vectors: np.ndarray) -> np.ndarray:
        """Embedding-space vectors -> the head's features (PCA, then rows L2-normalised)."""
        x = np.asarray(vectors, dtype=np.float32)
        if self.pca_components is not None and self.pca_mean is not None:
            x = ((x - self.pca_mean) @ self.pca_components.T).astype(np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def proba(self, z: np.ndarray) -> np.ndarray:
        """The logistic regression's probabilities for features ``z``."""
        s = ((z - self.scale_mean) / self.scale).astype(np.float64) @ self.coef.T.astype(np.float64) + self.intercept
        if s.shape[1] == 1:
            p1 = 1.0 / (1.0 + np.exp(-s[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)

    def nearest(self, z: np.ndarray, *, block: int = 4096) -> np.ndarray:
        """Euclidean distance from each row of ``z`` to the nearest labelled item."""
        out = np.empty(len(z), np.float64)
        sq = (self.labelled.astype(np.float32) ** 2).sum(1)
        for s in range(0, len(z), block):
            q = z[s : s + block].astype(np.float32)
            d2 = (q**2).sum(1)[:, None] + sq[None, :] - 2.0 * (q @ self.labelled.T)
            out[s : s + len(q)] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
        return out

    def answer(self, vectors: np.ndarray) -> HeadAnswer:
        """Predicted label, probabilities and calibrated confidence for embedding-space vectors."""
        z = self.features(vectors)
        p = self.proba(z)
        raw = p.max(1)
        k = np.searchsorted(self.cal_edges, raw, side="right") - 1
        conf = self.cal_values[np.clip(k, 0, len(self.cal_values) - 1)]
        dist = self.nearest(z)
        if self.dcal_coef is not None:
            r = np.clip(raw, 1e-4, 1 - 1e-4)
            f = np.stack([np.log(r / (1 - r)), np.log(np.maximum(dist, 1e-4))], axis=1)
            conf = np.minimum(conf, 1.0 / (1.0 + np.exp(-(f @ self.dcal_coef + self.dcal_intercept))))
        known = 1.0 - np.searchsorted(self.novel, dist, side="left") / max(len(self.novel), 1)
        return HeadAnswer(predicted=p.argmax(1), proba=p, confidence=conf * known, distance=dist)

    def combine_one(self, learnt: str, confidence: float, index_label: str | None) -> str | None:
        """One answer from the head's label and confidence and the index's answer (None: unknown).

        A name needs the head's confidence at or above :attr:`threshold` *and* a name from the
        index's unknown rule. When the two name different labels, ``combine="both"`` answers
        unknown and ``"learnt"`` answers the head's label.
        """
        if confidence < self.threshold or index_label is None:
            return None
        if learnt == index_label or self.combine == "learnt":
            return learnt
        return None

    # -- files ------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str], name: str) -> dict[str, Any]:
        """Write the arrays to ``folder/name`` (atomically) and return the manifest entry."""
        arrays = {k: np.asarray(getattr(self, k)) for k in _ARRAYS}
        arrays.update({k: np.asarray(getattr(self, k)) for k in _OPTIONAL if getattr(self, k) is not None})
        folder = Path(folder)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        try:
            savez: Any = np.savez  # its typed signature reads ``**arrays`` as its own keywords
            with os.fdopen(fd, "wb") as fh:
                savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return {
            "format": HEAD_FORMAT,
            "file": name,
            "classes": list(self.classes),
            "threshold": float(self.threshold),
            "scale": float(self.scale),
            "dcal_intercept": float(self.dcal_intercept),
            "combine": self.combine,
            "info": dict(self.info),
        }

    @classmethod
    def load(cls, folder: str | os.PathLike[str], entry: Mapping[str, Any]) -> "LearntHead":
        """The head that ``entry`` (``index.json``'s ``head``) describes, from ``folder``."""
        if entry.get("format") != HEAD_FORMAT:
            raise ValueError(f"learnt head of format {entry.get('format')!r}; this version reads {HEAD_FORMAT}")
        with np.load(Path(folder) / str(entry["file"]), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        missing = [k for k in _ARRAYS if k not in arrays]
        if missing:
            raise ValueError(f"learnt head {entry['file']} lacks {', '.join(missing)}")
        return cls(
            classes=[str(c) for c in entry["classes"]],
            scale_mean=arrays["scale_mean"],
            scale=float(entry["scale"]),
            coef=arrays["coef"],
            intercept=arrays["intercept"],
            cal_edges=arrays["cal_edges"],
            cal_values=arrays["cal_values"],
            labelled=arrays["labelled"],
            novel=arrays["novel"],
            threshold=float(entry["threshold"]),
            pca_mean=arrays.get("pca_mean"),
            pca_components=arrays.get("pca_components"),
            dcal_coef=arrays.get("dcal_coef"),
            dcal_intercept=float(entry.get("dcal_intercept", 0.0)),
            combine=str(entry.get("combine", "both")),
            info=dict(entry.get("info") or {}),
        )
