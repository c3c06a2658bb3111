"""The learning loop: labels so far -> a light model on the embeddings -> what to name next.

After curators have named the clean clusters, what is left lies in mixed regions of the map. This
stage learns from every label so far and proposes where to go next:

* a **model** on the embeddings, chosen each round by held-out measurement between multinomial
  logistic regression on PCA features and label spreading over the kNN graph (both
  scikit-learn);
* **out-of-fold** probabilities for every labelled item from *group-wise* folds: each label's items
  are cut into runs of neighbours (k-means inside the label) and a run is held out whole, so a held-out
  item never has its near-twin in training and the estimates are not flattered;
* a **calibrated confidence** for every unlabelled item: the held-out share of right answers among
  labelled items the model was as sure of (isotonic, each step shrunk towards one half by its count),
  so "0.98" means about 98 of 100 right;
* **suggested groups**: per label, the unlabelled items predicted for it at or above a confidence bar,
  largest groups first and least sure first inside. The bar starts strict and relaxes as the held-out
  accuracy rises: ``bar = 1 - (1 - aim) * heldout_accuracy`` (never below ``aim``, the precision the team
  aims for), so an unproven model only proposes what it is very sure of;
* the **queues** of :mod:`corral.pipeline.queues`: the hard items, the named items whose label looks
  wrong, near-duplicates.

Nothing here labels anything: accepting a group is an ordinary ``assign`` minus exclusions, and each
acceptance or exclusion changes the label store's version, which retrains the model next round.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MODELS = ("auto", "logreg", "spreading", "svm")
#: Most threads one round's out-of-fold fits use (folds x models of them can run at once).
MAX_FIT_THREADS = 8


class LearnError(ValueError):
    """The labels so far cannot teach a model (too few labels or items); says what is needed."""


@dataclass(frozen=True)
class LearnConfig:
    """Options of the learning loop. Each is validated when the config is made."""

    aim: float = 0.97  # precision a suggested group aims for; the bar never drops below it
    model: str = "auto"  # "auto" (chosen by held-out log loss each round), "logreg", "spreading" or "svm"
    folds: int = 5  # group-wise folds for the out-of-fold estimates
    min_per_label: int = 3  # a label with fewer items is not learnt (and not suggested)
    max_group: int = 200  # largest suggested group (the most confident members are kept)
    min_group: int = 2  # smaller suggested groups are left to the other queues
    dims: int = 128  # PCA dimensions of the features (the embeddings' own when smaller)
    n_neighbors: int = 10  # kNN graph for label spreading, density and near-duplicates
    C: float = 1.0  # logistic regression's inverse regularisation (scikit-learn's name)
    alpha: float = 0.2  # label spreading's clamping factor (scikit-learn's name)
    svm_C: float = 10.0  # the RBF-kernel SVM's inverse regularisation (scikit-learn's C of SVC)
    max_train: int = 3000  # most labelled rows one fit of the SVM sees (a per-label sample beyond)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.5 <= self.aim < 1.0:
            raise ValueError(f"aim={self.aim!r}: must be in [0.5, 1), the precision a suggested group aims for")
        if self.model not in MODELS:
            raise ValueError(f"model={self.model!r}: must be one of {', '.join(MODELS)}")
        for name, lo in (("folds", 2), ("min_per_label", 2), ("max_group", 1), ("min_group", 1), ("dims", 2), ("n_neighbors", 2)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name}={v!r}: must be an integer >= {lo}")
        if not self.C > 0:
            raise ValueError(f"C={self.C!r}: must be > 0")
        if not self.svm_C > 0:
            raise ValueError(f"svm_C={self.svm_C!r}: must be > 0")
        if not isinstance(self.max_train, int) or isinstance(self.max_train, bool) or self.max_train < 10:
            raise ValueError(f"max_train={self.max_train!r}: must be an integer >= 10")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha={self.alpha!r}: must be in (0, 1)")


@dataclass
class Calibrator:
    """A step map from the model's top probability to the held-out chance that it is right."""

    edges: np.ndarray  # lower bound of each step's raw confidence, increasing
    values: np.ndarray  # the calibrated confidence of each step, non-decreasing

    @classmethod
    def fit(cls, raw: np.ndarray, correct: np.ndarray) -> "Calibrator":
        from sklearn.isotonic import IsotonicRegression

        order = np.argsort(raw, kind="stable")
        r, c = raw[order], correct[order].astype(np.float64)
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True).fit_transform(r, c)
        # Steps of equal fitted value; each step's value is its right answers shrunk by its count,
        # so a step of three right answers says 0.875, not 1.0.
        starts = np.flatnonzero(np.r_[True, np.diff(fitted) != 0])
        ends = np.r_[starts[1:], len(r)]
        vals = np.array([(c[s:e].sum() + 0.5) / (e - s + 1.0) for s, e in zip(starts, ends)])
        return cls(edges=r[starts], values=np.maximum.accumulate(vals))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self.edges, raw, side="right") - 1
        return self.values[np.clip(k, 0, len(self.values) - 1)]


@dataclass
class DistanceCalibrator:
    """The held-out chance of being right from the model's top probability *and* how far the item lies
    from the nearest labelled item (Platt scaling on both, never more sure farther away).

    Curators name whole clusters, so labelled items come in clumps while what is left lies elsewhere:
    a calibration on held-out labelled items alone would read the model's sureness near the clumps as
    sureness everywhere. The held-out items' distance is to the nearest item of *their* training fold.
    """

    coef: np.ndarray  # [2]: on logit(raw) and on log(distance)
    intercept: float
    reach: float  # distances beyond this are outside what the calibration saw

    @classmethod
    def fit(cls, raw: np.ndarray, dist: np.ndarray, correct: np.ndarray, *, C: float = 1.0) -> "DistanceCalibrator | None":
        """None when the held-out answers are all right or all wrong (nothing to fit a slope on)."""
        from sklearn.linear_model import LogisticRegression

        c = correct.astype(int)
        if c.min() == c.max() or len(c) < 10:
            return None
        f = cls._features(raw, dist)
        lr = LogisticRegression(C=C).fit(f, c)
        coef, b = lr.coef_[0].copy(), float(lr.intercept_[0])
        if coef[1] > 0:  # never more sure farther from the labels: drop the distance term
            lr = LogisticRegression(C=C).fit(f[:, :1], c)
            coef, b = np.array([lr.coef_[0][0], 0.0]), float(lr.intercept_[0])
        return cls(coef=coef, intercept=b, reach=float(np.quantile(dist, 0.95)))

    @staticmethod
    def _features(raw: np.ndarray, dist: np.ndarray) -> np.ndarray:
        p = np.clip(raw, 1e-4, 1 - 1e-4)
        return np.stack([np.log(p / (1 - p)), np.log(np.maximum(dist, 1e-4))], axis=1)

    def __call__(self, raw: np.ndarray, dist: np.ndarray) -> np.ndarray:
        z = self._features(raw, dist) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


@dataclass
class Group:
    """A suggested group: unlabelled rows predicted ``label``, least sure first."""

    label: str
    rows: np.ndarray
    confidence: np.ndarray

    @property
    def expected_precision(self) -> float:
        return float(self.confidence.mean()) if len(self.confidence) else 0.0


@dataclass
class LearnResult:
    """One round of the loop over ``n`` rows (the caller's order)."""

    classes: list[str]
    proba: np.ndarray  # [n, classes] for every row (labelled rows: out-of-fold)
    predicted: np.ndarray  # [n] class index (argmax of proba, exclusions respected)
    confidence: np.ndarray  # [n] calibrated chance the prediction is right
    labelled: np.ndarray  # [n] bool: rows whose label was learnt from
    y: np.ndarray  # [n] class index of the labelled rows, -1 elsewhere
    model: str
    heldout_accuracy: float
    heldout_log_loss: dict[str, float]
    bar: float
    groups: list[Group]
    knn: Any  # the kNN graph of the features (indices, distances)
    ignored_labels: dict[str, int] = field(default_factory=dict)  # labels with too few items
    seconds: float = 0.0
    config: LearnConfig = field(default_factory=LearnConfig)
    features: np.ndarray | None = None  # [n, dims] the features the model learnt on (rows L2-normalised)
    # [n] rows the regrouping found among no labelled item (set by corral.pipeline.loop.regroup_rest)
    unclaimed: np.ndarray | None = None
    # True while the labels are too few to tell classes nobody named from the named ones (no estimate)
    undecided: bool = False

    @property
    def estimated_accuracy_left(self) -> float | None:
        """The model's expected accuracy on the rows still unlabelled: their mean calibrated
        confidence, where a row the regrouping found among no labelled item counts as a miss (it is
        most likely of a class nobody has named, which the model cannot name). None while the
        labels are too few to tell such rows apart (fewer than the regrouping needs)."""
        free = ~self.labelled
        if not free.any() or self.undecided:
            return None
        conf = self.confidence[free]
        if self.unclaimed is not None:
            conf = np.where(self.unclaimed[free], 0.0, conf)
        return float(conf.mean())

    def summary(self) -> dict[str, Any]:
        free = int((~self.labelled).sum())
        return {
            "model": self.model,
            "classes": len(self.classes),
            "labelled": int(self.labelled.sum()),
            "unlabelled": free,
            "heldout_accuracy": round(self.heldout_accuracy, 4),
            "heldout_log_loss": {k: round(v, 4) for k, v in self.heldout_log_loss.items()},
            "bar": round(self.bar, 4),
            "estimated_accuracy_left": None if self.estimated_accuracy_left is None else round(self.estimated_accuracy_left, 4),
            "suggested": int(sum(len(g.rows) for g in self.groups)),
            "groups": len(self.groups),
            "ignored_labels": self.ignored_labels,
            "seconds": round(self.seconds, 2),
            "config": asdict(self.config),
        }


def features(vectors: np.ndarray, *, dims: int, seed: int = 0) -> np.ndarray:
    """PCA of the (L2-normalised) embeddings to ``dims`` dimensions, rows L2-normalised again."""
    from sklearn.decomposition import PCA

    x = np.asarray(vectors, dtype=np.float32)
    if x.shape[1] > dims and x.shape[0] > dims:
        x = PCA(n_components=dims, random_state=seed, svd_solver="randomized").fit_transform(x).astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def group_folds(z: np.ndarray, y: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """A fold per labelled row: each label's rows in runs of neighbours, a run held out whole.

    A label's rows are cut into ``folds`` runs with k-means (fewer when the label is small) and the
    runs go to different folds, so every fold holds out part of every label that has enough rows.
    """
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    out = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        k = int(min(folds, len(rows)))
        if k <= 1:
            out[rows] = rng.integers(folds)
            continue
        part = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=50).fit_predict(z[rows]) if len(rows) > k else np.arange(k)
        offset = int(rng.integers(folds))
        out[rows] = (part + offset) % folds
    return out


def scaling(rows: np.ndarray) -> tuple[np.ndarray, float]:
    """The centre and the one scale the classifiers see features in: ``(z - mean) / scale``.

    One scale for all dimensions (the training rows' overall spread) keeps C meaningful whatever
    the embedder; per-dimension standardising would blow the PCA's noise dimensions up."""
    mu = rows.mean(0)
    return mu, float(np.sqrt(((rows - mu) ** 2).sum(1).mean() / rows.shape[1])) + 1e-6


def _logreg(z: np.ndarray, y: np.ndarray, train: np.ndarray, n_classes: int, cfg: LearnConfig) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y[train])
    clf = LogisticRegression(C=cfg.C, max_iter=300)
    mu, sd = scaling(z[train])
    clf.fit((z[train] - mu) / sd, y[train])
    p = np.zeros((len(z), n_classes))
    p[:, present] = clf.predict_proba((z - mu) / sd)
    return p


def _svm(z: np.ndarray, y: np.ndarray, train: np.ndarray, n_classes: int, cfg: LearnConfig) -> np.ndarray:
    """An RBF-kernel SVM with Platt-scaled probabilities (scikit-learn's SVC). Where classes bend
    around each other (garments, handwriting) it separates what a linear model cannot; its cost
    grows with the square of the training rows, so one fit sees at most ``max_train`` of them (an
    even sample of each label beyond that)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    rows = np.flatnonzero(train)
    if len(rows) > cfg.max_train:
        rng = np.random.default_rng(cfg.seed)
        rows = np.sort(rng.choice(rows, cfg.max_train, replace=False))
    present = np.unique(y[rows])
    p = np.zeros((len(z), n_classes))
    if len(present) < 2:
        p[:, present] = 1.0
        return p
    mu, sd = scaling(z[rows])
    svc = SVC(C=cfg.svm_C, kernel="rbf", gamma="scale", random_state=cfg.seed)
    clf: Any
    if "probability" in svc.get_params():
        # libsvm's own probabilities (pairwise Platt scaling on inner folds). scikit-learn 1.9
        # deprecates the switch for the wrapper below, which measured worse here; it is kept
        # while it exists. (A process-wide filter for that one message: the fits run in threads,
        # and catch_warnings() is not thread-safe.)
        import warnings

        warnings.filterwarnings("ignore", message="The `probability` parameter was deprecated", category=FutureWarning)
        clf = svc.set_params(probability=True)
        clf.fit((z[rows] - mu) / sd, y[rows])
    else:
        counts = np.bincount(y[rows])
        clf = CalibratedClassifierCV(svc, method="sigmoid", cv=int(max(2, min(5, counts[counts > 0].min()))), ensemble=False)
        clf.fit((z[rows] - mu) / sd, y[rows])
    p[:, clf.classes_] = clf.predict_proba((z - mu) / sd)
    return p


def _spreading(graph: Any, y: np.ndarray, train: np.ndarray, n_classes: int, cfg: LearnConfig) -> np.ndarray:
    from sklearn.semi_supervised import LabelSpreading

    target = np.full(len(y), -1)
    target[train] = y[train]
    model = LabelSpreading(kernel=lambda a, b: graph, alpha=cfg.alpha, max_iter=60, tol=1e-4)
    model.fit(np.zeros((len(target), 1)), target)
    p = np.zeros((len(target), n_classes))
    p[:, model.classes_] = model.label_distributions_
    rowsum = p.sum(1, keepdims=True)
    return np.where(rowsum > 0, p / np.maximum(rowsum, 1e-12), 1.0 / n_classes)


def knn_affinity(knn: Any, n: int) -> Any:
    """A symmetric sparse affinity over the kNN graph: exp(-d^2 / sigma_i sigma_j), as spreading needs."""
    import scipy.sparse as sp

    idx, dist = knn.indices, knn.distances.astype(np.float64)
    sigma = np.maximum(np.median(dist, axis=1), 1e-6)
    rows = np.repeat(np.arange(n), idx.shape[1])
    w = np.exp(-(dist.ravel() ** 2) / (sigma[rows] * sigma[idx.ravel()]))
    a = sp.csr_matrix((w, (rows, idx.ravel())), shape=(n, n))
    return a.maximum(a.T).tocsr()


def nearest_distances(z: np.ndarray, base: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Distance from each ``query`` row to its nearest ``base`` row (both index arrays into ``z``)."""
    from corral.pipeline.knn import knn_query

    if len(query) == 0:
        return np.zeros(0)
    _, d, _ = knn_query(z[base], z[query], k=1, method="faiss")
    return d[:, 0].astype(np.float64)


def novel_distances(z: np.ndarray, y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Sorted distances from each labelled item to the nearest item of *another* label: what an item
    of a label not yet named looks like from the labels there are."""
    out = [nearest_distances(z, rows[y[rows] != c], rows[y[rows] == c]) for c in np.unique(y[rows])]
    return np.sort(np.concatenate(out)) if out else np.zeros(0)


def _parallel(calls: list[Any]) -> list[Any]:
    """Run ``calls`` (functions of no argument) on up to one thread per core; answers in order."""
    from concurrent.futures import ThreadPoolExecutor

    from corral.pipeline.device import cpu_count

    workers = min(len(calls), cpu_count(), MAX_FIT_THREADS)
    if workers <= 1:
        return [c() for c in calls]
    from threadpoolctl import threadpool_limits

    # One BLAS thread per fit while the fits share the cores (else each fit's BLAS starts its own
    # threads per core and they fight over them).
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="corral-learn") as pool:
        return list(pool.map(lambda c: c(), calls))


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-6, 1.0))))


def learn(
    *,
    vectors: np.ndarray,
    labels: list[str | None],
    exclusions: dict[int, set[str]] | None = None,
    config: LearnConfig | None = None,
    knn: Any = None,
) -> LearnResult:
    """Learn from the labelled rows and predict every row (see the module docstring).

    ``labels[i]`` is row ``i``'s label or None; ``exclusions`` maps a row to the labels curators said
    it is not (never suggested for them). ``knn`` may pass a kNN graph of the same rows (an object with
    ``indices`` and ``distances``) to skip building one. Raises :class:`LearnError` when the labels cannot
    teach a model yet, saying what is needed.
    """
    cfg = config or LearnConfig()
    t0 = time.perf_counter()
    x = np.asarray(vectors)
    n = len(x)
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} vectors")
    counts: dict[str, int] = {}
    for lb in labels:
        if lb is not None:
            counts[lb] = counts.get(lb, 0) + 1
    classes = sorted(lb for lb, c in counts.items() if c >= cfg.min_per_label)
    ignored = {lb: c for lb, c in counts.items() if c < cfg.min_per_label}
    if len(classes) < 2:
        have = ", ".join(f"{lb} ({c})" for lb, c in sorted(counts.items())) or "none"
        raise LearnError(f"the loop needs at least 2 labels with {cfg.min_per_label} or more items each to learn from; labels so far: {have}. Name a few more clusters first.")
    cidx = {lb: k for k, lb in enumerate(classes)}
    y = np.array([cidx.get(lb, -1) if lb is not None else -1 for lb in labels], dtype=np.int64)
    labelled = y >= 0
    z = features(x, dims=cfg.dims, seed=cfg.seed)
    if knn is None:
        from corral.pipeline.knn import knn_graph

        knn = knn_graph(z, k=min(cfg.n_neighbors, n - 1), method="faiss")
    graph = knn_affinity(knn, n)
    rows = np.flatnonzero(labelled)
    fold = np.full(n, -1)
    fold[rows] = group_folds(z[rows], y[rows], folds=cfg.folds, seed=cfg.seed)

    fits = {
        "logreg": lambda tr: _logreg(z, y, tr, len(classes), cfg),
        "spreading": lambda tr: _spreading(graph, y, tr, len(classes), cfg),
        "svm": lambda tr: _svm(z, y, tr, len(classes), cfg),
    }
    names = list(fits) if cfg.model == "auto" else [cfg.model]
    oof = {m: np.zeros((n, len(classes))) for m in names}
    dist = np.zeros(n)  # to the nearest labelled item (held-out rows: of their training fold)
    splits = []
    for f in range(cfg.folds):
        test = rows[fold[rows] == f]
        if len(test) == 0:
            continue
        train = np.zeros(n, bool)
        train[rows[fold[rows] != f]] = True
        dist[test] = nearest_distances(z, np.flatnonzero(train), test)
        splits.append((train, test))
    # The out-of-fold fits are independent: they run side by side on the machine's cores (the SVM,
    # the slowest, releases the GIL while it trains). Each fit is seeded, so the answers are the
    # same whatever the number of threads.
    # Each model's fit on every label goes in the same batch (one of them serves the round), so the
    # slowest fit does not wait for the choice.
    jobs = [(m, train, test) for train, test in splits for m in names] + [(m, labelled, None) for m in names]
    fulls = {}
    for (m, _, test), p in zip(jobs, _parallel([lambda m=m, train=train: fits[m](train) for m, train, _ in jobs])):
        if test is None:
            fulls[m] = p
        else:
            oof[m][test] = p[test]
    free = np.flatnonzero(~labelled)
    dist[free] = nearest_distances(z, rows, free)
    losses = {m: _log_loss(oof[m][rows], y[rows]) for m in names}
    model = min(losses, key=lambda m: losses[m])
    full = fulls[model]
    proba = full.copy()
    proba[rows] = oof[model][rows]
    for r, labs in (exclusions or {}).items():
        ks = [cidx[lb] for lb in labs if lb in cidx]
        if ks and not labelled[r]:
            proba[r, ks] = 0.0
            s = proba[r].sum()
            if s > 0:
                proba[r] /= s
            elif len(ks) < len(classes):  # the model had only excluded labels: even odds over the rest
                proba[r] = 1.0 / (len(classes) - len(ks))
                proba[r, ks] = 0.0
    predicted = proba.argmax(1)
    raw = proba.max(1)
    correct = predicted[rows] == y[rows]
    heldout = float(correct.mean())
    confidence = Calibrator.fit(raw[rows], correct)(raw)
    dcal = DistanceCalibrator.fit(raw[rows], dist[rows], correct, C=cfg.C)
    if dcal is not None:  # the more careful of the two readings
        confidence = np.minimum(confidence, dcal(raw, dist))
    # An unlabelled item may belong to a label nobody has named yet; the model would still pick a
    # known one. How far a never-seen label's items lie from the others' (each label held out whole)
    # tells how likely an item at a given distance is to be new: its confidence is scaled by the
    # share of those distances that are larger than its own.
    novel = novel_distances(z, y, rows)
    known = 1.0 - np.searchsorted(novel, dist, side="left") / max(len(novel), 1)
    confidence = confidence * np.where(labelled, 1.0, known)
    confidence[proba.sum(1) == 0] = 0.0  # every learnt label excluded: nothing to say
    bar = max(cfg.aim, 1.0 - (1.0 - cfg.aim) * heldout)
    groups = suggest_groups(predicted, confidence, labelled, classes, bar=bar, cfg=cfg)
    res = LearnResult(
        classes=classes,
        proba=proba,
        predicted=predicted,
        confidence=confidence,
        labelled=labelled,
        y=y,
        model=model,
        heldout_accuracy=heldout,
        heldout_log_loss=losses,
        bar=bar,
        groups=groups,
        knn=knn,
        ignored_labels=ignored,
        seconds=time.perf_counter() - t0,
        config=cfg,
        features=z,
    )
    logger.info("learn: %s, held-out accuracy %.3f, bar %.3f, %d groups (%d items) in %.1fs", model, heldout, bar, len(groups), sum(len(g.rows) for g in groups), res.seconds)
    return res


def suggest_groups(predicted: np.ndarray, confidence: np.ndarray, labelled: np.ndarray, classes: list[str], *, bar: float, cfg: LearnConfig) -> list[Group]:
    """Per label, the unlabelled rows predicted for it at or above ``bar``: the ``max_group`` most
    confident, shown least sure first; the largest groups first."""
    out = []
    for k, lb in enumerate(classes):
        rows = np.flatnonzero(~labelled & (predicted == k) & (confidence >= bar))
        if len(rows) < cfg.min_group:
            continue
        rows = rows[np.argsort(-confidence[rows], kind="stable")][: cfg.max_group][::-1]
        out.append(Group(label=lb, rows=rows, confidence=confidence[rows]))
    out.sort(key=lambda g: (-len(g.rows), g.label.lower()))
    return out


#: Tiles on a review page (the viewer's page of the ImageNet browsing interface).
PAGE_SIZE = 48


def likely_pages(res: LearnResult, *, size: int = PAGE_SIZE, min_items: int = 3) -> list[Group]:
    """Per label, a review page: the ``size`` unlabelled rows the model predicts for it most
    surely, whatever the bar and the known/new gate, least sure first; the pages with the most
    tiles the model expects right (the sum of their calibrated confidences) first.

    A suggested group is accepted as a whole, so it must clear the bar and the gate. A review page
    is not: the curator looks at every tile and clicks the ones that are not the label, so a page
    the model is less sure of costs clicks, not wrong labels. This is where the model helps with
    what the map cannot part (garments, handwriting): the items a lasso cannot catch cleanly and
    the gate holds back. Rows already in a suggested group, and rows with no confidence (every
    learnt label excluded), are left out."""
    free = ~res.labelled & (res.confidence > 0)
    for g in res.groups:
        free[g.rows] = False
    rows = np.flatnonzero(free)
    # one sort: by predicted label, the surest first within each (ties in row order)
    rows = rows[np.lexsort((rows, -res.confidence[rows], res.predicted[rows]))]
    labels, starts = np.unique(res.predicted[rows], return_index=True)
    out = []
    for k, a, b in zip(labels.tolist(), starts.tolist(), [*starts[1:].tolist(), len(rows)]):
        if b - a < min_items:
            continue
        page = rows[a : min(b, a + size)][::-1]
        out.append(Group(label=res.classes[k], rows=page, confidence=res.confidence[page]))
    out.sort(key=lambda g: (-float(g.confidence.sum()), g.label.lower()))
    return out
