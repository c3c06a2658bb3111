"""The decision rule of recognition and its calibration.

Given a query vector, the ``k`` nearest rows of the :class:`~corral.storage.index.LabelIndex` vote. Each
neighbour's weight is a softmax of its similarity (temperature ``tau``), so the nearest ones
dominate, and it votes with ``weight x similarity``: for its label when it is labelled, against
every label it was excluded from when a curator excluded it. A label's score is the sum of its
votes, so when all neighbours agree it is their weighted mean similarity, and it drops when they
disagree or when a near-duplicate of an excluded item is among them.

Labels differ in how alike their own items are (one object seen from many sides, one face under
one light), so a single cut on similarity would be too strict for some and too lax for others.
Each label therefore has a *typical* score: the median score its own items get from the rest of
the index (leave-one-out, on up to ``baseline_items`` items). The best label is the answer when
``score - typical >= threshold``, otherwise the answer is "unknown".

The threshold is calibrated on the labelled data itself: some labels are held out entirely (their
items play the unknowns) and a share of every other label's items is held out as known queries
(by default a *run* of look-alike neighbours, not random items: see :func:`split_for_calibration`);
both are answered from an exact index of the rest. This is repeated over ``folds`` different
splits and the answers pooled, so that a collection with few labels (40 people, 6 held out per
split) does not hang its threshold on a handful of queries. The chosen threshold maximises
``(recall + unknown rejection) / 2``; with ``recall_target`` set it is lowered, when needed, until
that share of the correctly named known queries is kept, but never below the margin at which
``min_rejection`` of the unknown queries would still be rejected. A stricter one, the lowest
reaching ``suggest_precision``, is what ``corral suggest`` uses to pre-label.

An index built with the learnt head (:mod:`corral.storage.learnt_head`, the curation loop's model)
answers with it: a name needs the head's calibrated confidence at or above its threshold *and* a
name from the rule above; when the two name different labels the head's ``combine`` setting says
which answer stands (see ``docs/recognition.md``). ``using="index"`` ignores the head.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from corral.storage.index import LabelIndex, RecognitionIndexError

logger = logging.getLogger(__name__)


@dataclass
class RuleConfig:
    """The decision rule's settings; ``threshold=None`` means "calibrate it"."""

    k: int = 10  # neighbours that vote
    tau: float = 0.05  # softmax temperature of the votes (smaller: the nearest neighbour counts more)
    threshold: float | None = None  # below this score the answer is "unknown"; None: calibrated
    holdout: float = 0.2  # share of each label's items held out as known queries when calibrating
    grouping: str = "runs"  # known queries held out as runs of neighbours ("runs") or at random ("random")
    class_holdout: float = 0.2  # share of labels held out entirely as unknowns when calibrating
    max_queries: int = 2000  # most known (and most unknown) queries used to calibrate
    suggest_precision: float = 0.99  # precision the pre-labelling threshold must reach
    baseline_items: int = 20  # items per label whose leave-one-out scores give its typical score
    seed: int = 0  # the held-out split (fold f uses seed + 1000 f)
    folds: int = 5  # held-out splits whose answers are pooled to calibrate
    recall_target: float | None = None  # opt in: keep at least this share of correct known answers (e.g. 0.97), paid in unknown rejection
    min_rejection: float = 0.8  # ... but the recall target never lowers unknown rejection below this

    def validate(self) -> None:
        """Raise ValueError naming the bad field."""
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= 1000:
            raise ValueError(f"k={self.k!r}: expected a whole number from 1 to 1000")
        if not 0 < float(self.tau) <= 10:
            raise ValueError(f"tau={self.tau!r}: expected a temperature in (0, 10]; 0.05 is the default")
        if self.threshold is not None and not -1.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold={self.threshold!r}: expected a score in [-1, 1] or None to calibrate")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"grouping={self.grouping!r}: expected one of {', '.join(GROUPINGS)}")
        for name in ("holdout", "class_holdout"):
            v = getattr(self, name)
            if not 0 <= float(v) < 1:
                raise ValueError(f"{name}={v!r}: expected a share in [0, 1)")
        if not 0 < float(self.suggest_precision) <= 1:
            raise ValueError(f"suggest_precision={self.suggest_precision!r}: expected a share in (0, 1]")
        if self.max_queries < 1:
            raise ValueError(f"max_queries={self.max_queries!r}: must be >= 1")
        if self.baseline_items < 1:
            raise ValueError(f"baseline_items={self.baseline_items!r}: must be >= 1")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or not 1 <= self.folds <= 50:
            raise ValueError(f"folds={self.folds!r}: expected a whole number from 1 to 50")
        if self.recall_target is not None and not 0 < float(self.recall_target) <= 1:
            raise ValueError(f"recall_target={self.recall_target!r}: expected a share in (0, 1] or None")
        if not 0 <= float(self.min_rejection) <= 1:
            raise ValueError(f"min_rejection={self.min_rejection!r}: expected a share in [0, 1]")


@dataclass
class Decision:
    """The answer for one query."""

    label: str | None  # the recognised label, or None for "unknown"
    score: float  # the best label's score (also when the answer is unknown)
    top: list[tuple[str, float]] = field(default_factory=list)  # best labels first, with scores
    typical: float = 0.0  # the best label's typical score; the answer is a label when score - typical >= threshold
    confidence: float | None = None  # with the learnt head: its calibrated confidence in ``learnt``
    learnt: str | None = None  # with the learnt head: the label it predicts (before its threshold)
    index_label: str | None = None  # what the index's rule alone answers (None: unknown)

    @property
    def margin(self) -> float:
        return self.score - self.typical

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "decision": self.label if self.label is not None else "unknown",
            "score": round(self.score, 6),
            "margin": round(self.margin, 6),
            "top": [[n, round(s, 6)] for n, s in self.top],
        }
        if self.confidence is not None:
            out["confidence"] = round(self.confidence, 6)
            out["learnt"] = self.learnt
        out["using"] = "learnt" if self.confidence is not None else "index"
        return out


def vote(sims: np.ndarray, rows: np.ndarray, row_label: np.ndarray, not_labels: Mapping[int, frozenset[int]], *, tau: float) -> list[list[tuple[int, float]]]:
    """Per query, ``(label code, score)`` pairs, best first (see the module docstring)."""
    out: list[list[tuple[int, float]]] = []
    for i in range(len(sims)):
        valid = rows[i] >= 0
        if not valid.any():
            out.append([])
            continue
        s = sims[i, valid].astype(np.float64)
        r = rows[i, valid]
        w = np.exp((s - s.max()) / tau)
        contrib = (w / w.sum()) * np.maximum(s, 0.0)
        scores: dict[int, float] = {}
        for c, v in zip(row_label[r].tolist(), contrib.tolist()):
            if c >= 0:
                scores[c] = scores.get(c, 0.0) + v
        if not_labels:
            for row, v in zip(r.tolist(), contrib.tolist()):
                for c in not_labels.get(row, ()):
                    if c in scores:
                        scores[c] -= v
        out.append(sorted(scores.items(), key=lambda kv: -kv[1]))
    return out


def prepare_queries(vectors: Any, dim: int) -> np.ndarray:
    """Queries as a float32 ``(n, dim)`` array of unit vectors; bad ones raise ValueError."""
    q = np.asarray(vectors, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"vectors of shape {tuple(q.shape)}: this index expects dimension {dim}")
    if not np.isfinite(q).all():
        raise ValueError("vectors hold NaN or infinite values")
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("a zero vector has no direction to search")
    return np.ascontiguousarray(q / norms, dtype=np.float32)


class Recognizer:
    """Answers "which label is this?" for vectors, with an index and its calibrated rule."""

    def __init__(self, index: LabelIndex, rule: RuleConfig | None = None, *, baselines: Mapping[str, float] | None = None, using: str | None = None):
        if using not in (None, "learnt", "index"):
            raise ValueError(f"using={using!r}: expected learnt or index (None: the head when the index has one)")
        if using == "learnt" and index.head is None:
            raise RecognitionIndexError("this index has no learnt head; rebuild it with `corral index build --using learnt`")
        self.index = index
        self.head = index.head if using != "index" else None
        saved = dict(index.meta.rule or {})
        if rule is None:
            rule = RuleConfig(**{k: v for k, v in saved.items() if k in RuleConfig.__dataclass_fields__})
        rule.validate()
        self.rule = rule
        by_name = dict(saved.get("baselines") or {}) if baselines is None else dict(baselines)
        default = saved.get("baseline_default") if baselines is None else None
        if default is None:
            default = float(np.median(list(by_name.values()))) if by_name else 0.0
        self.baseline_default = float(default)
        self.baselines = np.array([float(by_name.get(n, self.baseline_default)) for n in index.label_names] or [0.0], dtype=np.float64)

    @property
    def threshold(self) -> float:
        return float(self.rule.threshold) if self.rule.threshold is not None else 0.0

    @property
    def using(self) -> str:
        """What names a query: "learnt" (the head with the index's unknown rule) or "index" alone."""
        return "learnt" if self.head is not None else "index"

    @property
    def suggest_threshold(self) -> float:
        v = (self.index.meta.rule or {}).get("suggest_threshold")
        return float(v) if v is not None else self.threshold + 0.05

    def check_model(self, model: str | None = None, weights_hash: str | None = None) -> None:
        """Refuse queries embedded with another model than the index's."""
        meta = self.index.meta
        if model is not None and model != meta.model:
            raise RecognitionIndexError(f"vectors made with model {model!r}; this index holds {meta.model!r} vectors; embed with {meta.model}")
        if weights_hash is not None and meta.weights_hash and weights_hash != meta.weights_hash:
            raise RecognitionIndexError(f"vectors made with weights {weights_hash!r}; this index was built with {meta.weights_hash!r}")

    def recognize(self, vectors: Any, *, k: int | None = None, threshold: float | None = None, top: int = 5) -> list[Decision]:
        """One :class:`Decision` per query vector (rows of ``vectors``, embedding space)."""
        k = self.rule.k if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
            raise ValueError(f"k={k!r}: expected a whole number from 1 to 1000")
        t = self.threshold if threshold is None else float(threshold)
        q = prepare_queries(vectors, self.index.dim)
        sims, rows = self.index.search(q, k)
        names = self.index.label_names
        base = self.baselines
        out = []
        for ranked in vote(sims, rows, self.index.row_label, self.index.not_labels, tau=self.rule.tau):
            if not ranked:
                out.append(Decision(None, 0.0, [], self.baseline_default))
                continue
            code, score = ranked[0]
            typical = float(base[code]) if code < len(base) else self.baseline_default
            label = names[code] if score > 0 and score - typical >= t else None
            out.append(Decision(label, float(score), [(names[c], float(s)) for c, s in ranked[:top] if s > 0], typical, index_label=label))
        if self.head is not None and len(q):
            got = self.head.answer(q)
            for d, c, conf in zip(out, got.predicted.tolist(), got.confidence.tolist()):
                d.learnt, d.confidence = self.head.classes[c], float(conf)
                d.label = self.head.combine_one(d.learnt, d.confidence, d.index_label)
        return out


def own_label_scores(search: Any, vectors: np.ndarray, rows: np.ndarray, codes: np.ndarray, not_labels: Mapping[int, frozenset[int]], *, k: int, tau: float) -> np.ndarray:
    """Leave-one-out: the score each given row's own label gets from the other rows.

    ``search(queries, k) -> (sims, rows)`` searches the set ``codes`` describes, which contains
    the queried rows themselves; their own hit is dropped.
    """
    if len(rows) == 0:
        return np.zeros(0)
    s, r = search(np.ascontiguousarray(vectors[rows], dtype=np.float32), k + 1)
    keep_s = np.zeros((len(rows), k), np.float32)
    keep_r = np.full((len(rows), k), -1, np.int64)
    for i, row in enumerate(rows.tolist()):
        j = [x for x in range(r.shape[1]) if r[i, x] != row][:k]
        keep_s[i, : len(j)], keep_r[i, : len(j)] = s[i, j], r[i, j]
    ranked = vote(keep_s, keep_r, codes, not_labels, tau=tau)
    return np.array([dict(x).get(int(codes[row]), 0.0) for x, row in zip(ranked, rows.tolist())])


def label_baselines(search: Any, vectors: np.ndarray, codes: np.ndarray, not_labels: Mapping[int, frozenset[int]], *, rule: RuleConfig, n_labels: int) -> tuple[np.ndarray, float]:
    """Typical (median leave-one-out) score per label code, and the median over labels as the
    default for labels with a single item."""
    rng = np.random.default_rng(rule.seed + 2)
    sample: list[int] = []
    for c in range(n_labels):
        members = np.flatnonzero(codes == c)
        if len(members) >= 2:
            sample += (rng.choice(members, size=rule.baseline_items, replace=False) if len(members) > rule.baseline_items else members).tolist()
    rows = np.array(sorted(sample), dtype=np.int64)
    own = own_label_scores(search, vectors, rows, codes, not_labels, k=rule.k, tau=rule.tau)
    per = np.full(n_labels, np.nan)
    for c in range(n_labels):
        v = own[codes[rows] == c] if len(rows) else np.zeros(0)
        if len(v):
            per[c] = float(np.median(v))
    default = float(np.nanmedian(per)) if np.isfinite(per).any() else 0.0
    return np.where(np.isfinite(per), per, default), default


# --------------------------------------------------------------------------------------------
# Calibration


def split_for_calibration(
    codes: np.ndarray, *, holdout: float, class_holdout: float, seed: int, vectors: np.ndarray | None = None, grouping: str = "random"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks (reference, known queries, unknown queries) over rows with codes >= 0.

    Rows with code -1 (negatives) always stay in the reference set. Labels with one item are
    never held out; at least one label is held out as unknown when there are three or more.

    With ``grouping="runs"`` (and ``vectors``) a label's known queries are one run of neighbours:
    a random member and the members most similar to it. A new photo of a known thing is rarely a
    near-twin of a stored one (another pose, another day), while random held-out items nearly
    always have a twin left in the reference (the next frame, the next 5 degrees), so a threshold
    calibrated on them is tuned on easy queries and answers "unknown" to the hard known ones.
    """
    rng = np.random.default_rng(seed)
    ref = np.ones(len(codes), dtype=bool)
    known = np.zeros(len(codes), dtype=bool)
    unknown = np.zeros(len(codes), dtype=bool)
    classes = np.unique(codes[codes >= 0])
    if len(classes) >= 3 and class_holdout > 0:
        n_out = min(len(classes) - 2, max(1, int(round(class_holdout * len(classes)))))
        out_classes = rng.choice(classes, size=n_out, replace=False)
        unknown = np.isin(codes, out_classes)
        ref &= ~unknown
    for c in classes:
        if unknown.any() and np.isin(c, codes[unknown]):
            continue
        members = np.flatnonzero(codes == c)
        if len(members) < 2 or holdout <= 0:
            continue
        n_q = min(len(members) - 1, max(1, int(round(holdout * len(members)))))
        if grouping == "runs" and vectors is not None:
            # a run of one is a random item: with four or more, hold out the anchor's twin too
            n_q = max(n_q, min(2, len(members) - 2))
            anchor = int(rng.choice(members))
            sims = vectors[members] @ vectors[anchor]
            q = members[np.argsort(-sims, kind="stable")[:n_q]]
        else:
            q = rng.choice(members, size=n_q, replace=False)
        known[q] = True
        ref[q] = False
    return ref, known, unknown


def calibrate(vectors: np.ndarray, labels: Sequence[str | None], not_labels: Sequence[Sequence[str]], *, rule: RuleConfig, max_reference: int = 200_000) -> dict[str, Any]:
    """Choose the unknown threshold (and the pre-labelling one) on a held-out split.

    Returns ``{"threshold", "suggest_threshold", "report"}``; the report gives the precision,
    recall and unknown rejection the chosen thresholds reach on the held-out queries.
    """
    import faiss

    rule.validate()
    names = sorted({lb for lb in labels if lb})
    code_of = {n: i for i, n in enumerate(names)}
    codes = np.array([code_of[lb] if lb else -1 for lb in labels], dtype=np.int32)
    ks_all: list[np.ndarray] = []
    ok_all: list[np.ndarray] = []
    us_all: list[np.ndarray] = []
    n_ref: list[int] = []
    n_out: list[int] = []
    for fold in range(rule.folds):
        got = _calibration_fold(faiss, vectors, codes, not_labels, code_of, rule=rule, seed=rule.seed + 1000 * fold, max_reference=max_reference)
        if got is None:
            break  # no label has two items: no split will have known queries
        ks_all.append(got[0])
        ok_all.append(got[1])
        us_all.append(got[2])
        n_ref.append(got[3])
        n_out.append(got[4])
    if not ks_all:
        return {
            "threshold": 0.0,
            "suggest_threshold": None,
            "report": {"note": "too few labelled items to calibrate (need a label with 2 or more items); every best label is accepted", "known_queries": 0, "unknown_queries": 0},
        }
    ks, correct, us = np.concatenate(ks_all), np.concatenate(ok_all), np.concatenate(us_all)
    balanced = choose_threshold(ks, correct, us)
    chosen = apply_recall_target(balanced, ks, correct, us, rule.recall_target, rule.min_rejection)
    # the pre-labelling threshold stays on the first split: pooled over folds, one confident mistake
    # among more unknowns pushes "precision from here on" much higher (measured: suggestions halved)
    suggest = precision_threshold(ks_all[0], ok_all[0], us_all[0], rule.suggest_precision)
    report = {
        "folds": len(ks_all),
        "known_queries": int(len(ks)),
        "unknown_queries": int(len(us)),
        "reference_rows": int(n_ref[0]),
        "labels_held_out": int(n_out[0]),
        "top1_accuracy": round(float(correct.mean()), 4),
        "balanced_threshold": round(balanced, 6),
        "recall_target": rule.recall_target,
        "at_threshold": rates(ks, correct, us, chosen),
        "at_suggest_threshold": rates(ks_all[0], ok_all[0], us_all[0], suggest) if suggest is not None else None,
    }
    logger.info("calibrated threshold %.4f: %s", chosen, report["at_threshold"])
    return {"threshold": round(chosen, 6), "suggest_threshold": None if suggest is None else round(suggest, 6), "report": report}


def _calibration_fold(
    faiss: Any, vectors: np.ndarray, codes: np.ndarray, not_labels: Sequence[Sequence[str]], code_of: Mapping[str, int], *, rule: RuleConfig, seed: int, max_reference: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int] | None:
    """One held-out split: (known margins, known named right, unknown margins, reference rows,
    labels held out), or None when it has no known queries."""
    ref, known, unknown = split_for_calibration(codes, holdout=rule.holdout, class_holdout=rule.class_holdout, seed=seed, vectors=vectors, grouping=rule.grouping)
    rng = np.random.default_rng(seed + 1)

    def cap(mask: np.ndarray, n: int) -> np.ndarray:
        idx = np.flatnonzero(mask)
        return np.sort(rng.choice(idx, size=n, replace=False)) if len(idx) > n else idx

    ref_rows = cap(ref, max_reference)
    kq, uq = cap(known, rule.max_queries), cap(unknown, rule.max_queries)
    if len(kq) == 0:
        return None
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors[ref_rows], dtype=np.float32))
    sub_neg = {i: frozenset(code_of[n] for n in not_labels[r] if n in code_of) for i, r in enumerate(ref_rows.tolist()) if not_labels[r]}
    ref_codes = codes[ref_rows]
    base, _ = label_baselines(flat.search, vectors[ref_rows], ref_codes, sub_neg, rule=replace(rule, seed=seed), n_labels=len(code_of))

    def answer(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score - typical, best code) per query row."""
        if len(rows) == 0:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        s, r = flat.search(np.ascontiguousarray(vectors[rows], dtype=np.float32), min(rule.k, flat.ntotal))
        ranked = vote(s, r, ref_codes, sub_neg, tau=rule.tau)
        best = np.array([x[0][0] if x else -1 for x in ranked])
        margin = np.array([max(x[0][1], 0.0) - base[x[0][0]] if x else -1.0 for x in ranked])
        return margin, best

    ks, kp = answer(kq)
    us, _ = answer(uq)
    return ks, kp == codes[kq], us, int(len(ref_rows)), int(len(np.unique(codes[uq]))) if len(uq) else 0


def apply_recall_target(threshold: float, known_scores: np.ndarray, correct: np.ndarray, unknown_scores: np.ndarray, recall_target: float | None, min_rejection: float) -> float:
    """Lower ``threshold`` until ``recall_target`` of the correctly named known queries pass it,
    but not below the margin that still rejects ``min_rejection`` of the unknown queries."""
    ok = known_scores[correct]
    if recall_target is None or len(ok) == 0:
        return threshold
    # the largest t with share(ok >= t) >= target, just below that sample
    need = int(np.ceil(recall_target * len(ok) - 1e-9))
    t = float(np.sort(ok)[::-1][max(need, 1) - 1]) - 1e-6
    if t >= threshold:
        return threshold
    if len(unknown_scores):
        # the lowest t with share(unknown < t) >= min_rejection, just above that sample
        us = np.sort(unknown_scores)
        j = int(np.ceil(min_rejection * len(us) - 1e-9))
        floor = float(us[j - 1]) + 1e-6 if j > 0 else -np.inf
        t = min(threshold, max(t, floor))
    return float(max(t, THRESHOLD_RANGE[0]))


def rates(known_scores: np.ndarray, correct: np.ndarray, unknown_scores: np.ndarray, t: float) -> dict[str, float | None]:
    """Precision, recall and unknown rejection of threshold ``t`` on held-out queries."""
    acc_k = known_scores >= t
    acc_u = unknown_scores >= t
    named_right = int((acc_k & correct).sum())
    named = int(acc_k.sum() + acc_u.sum())
    return {
        "threshold": round(float(t), 6),
        "precision": round(named_right / named, 4) if named else None,
        "recall": round(named_right / len(known_scores), 4) if len(known_scores) else None,
        "unknown_rejection": round(float(1 - acc_u.mean()), 4) if len(unknown_scores) else None,
    }


#: How calibration picks a label's held-out known queries (see :func:`split_for_calibration`).
GROUPINGS = ("runs", "random")

#: Thresholds are looked for in this range of margins. Below -0.5 a query is less than half as
#: close to a label as the label's own items typically are; with few held-out items the best
#: split can lie anywhere in a wide empty gap, and this keeps it where a margin means something.
THRESHOLD_RANGE = (-0.5, 0.5)


def _candidates(known_scores: np.ndarray, unknown_scores: np.ndarray) -> np.ndarray:
    lo, hi = THRESHOLD_RANGE
    allv = np.unique(np.clip(np.concatenate([known_scores, unknown_scores, [0.0]]), lo, hi))
    # midpoints between neighbouring observed scores, so a threshold never sits on a sample
    return np.unique(np.concatenate([[lo], (allv[:-1] + allv[1:]) / 2, [hi]]))


def choose_threshold(known_scores: np.ndarray, correct: np.ndarray, unknown_scores: np.ndarray) -> float:
    """The threshold maximising (recall + unknown rejection) / 2.

    Without unknown queries (fewer than three labels) it keeps 95% of the correct answers.
    """
    if len(unknown_scores) == 0:
        ok = known_scores[correct]
        return float(np.quantile(ok, 0.05)) if len(ok) else 0.0
    cands = _candidates(known_scores, unknown_scores)
    recall = ((known_scores[None, :] >= cands[:, None]) & correct[None, :]).mean(axis=1)
    reject = (unknown_scores[None, :] < cands[:, None]).mean(axis=1)
    objective = recall + reject
    best = np.flatnonzero(objective >= objective.max() - 1e-12)
    # among equally good thresholds take the middle of the run, the most robust to new data
    return float(cands[best[len(best) // 2]])


def precision_threshold(known_scores: np.ndarray, correct: np.ndarray, unknown_scores: np.ndarray, target: float) -> float | None:
    """The lowest threshold from which on precision stays at ``target`` or above.

    None when only a threshold that names nothing reaches it.
    """
    cands = _candidates(known_scores, unknown_scores)
    acc_k = known_scores[None, :] >= cands[:, None]
    named = acc_k.sum(axis=1) + (unknown_scores[None, :] >= cands[:, None]).sum(axis=1)
    right = (acc_k & correct[None, :]).sum(axis=1)
    ok = (named == 0) | (right >= target * named)
    bad = np.flatnonzero(~ok)
    i = int(bad[-1]) + 1 if len(bad) else 0
    if i >= len(cands) or named[i] == 0:
        return None
    return float(cands[i])
