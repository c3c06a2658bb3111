"""Labels teach the map: the unlabelled items regrouped in a metric that the labels so far have learnt.

The model of :mod:`corral.pipeline.learn` can only suggest labels somebody has already named. On a
collection of many classes most of the work is naming the classes nobody has named yet, and there
the map's clusters are all the curator has. The labels still carry something that holds for those
classes too: how items of *one* class vary (pose, light, background, expression). This module
learns that variation from the labelled items and regroups the unlabelled ones with it.

* **The metric.** Within-class whitening: the scatter of labelled items around their label's mean,
  shrunk towards its average variance, is inverted (``x -> x S_w^{-1/2}``, rows L2-normalised
  again), so the directions along which one class varies count for less when two items are
  compared. With ``shrink`` 1 the metric is the plain cosine of the embeddings.
* **The cut.** Hierarchical clustering under that metric, cut at a merge distance. Average
  linkage suits classes that are compact clouds; single linkage follows a class that lies on a
  curve (an object on a turntable: each view is near the next, opposite views far apart).
* **The distance.** The cosine, or the share of nearest neighbours two items have in common (``k``
  about a labelled class's size): where some classes are tight and others loose (one person's
  faces under many lights beside another's under one), no one cosine cut keeps the loose ones whole
  without merging the tight ones, while two items of one class share their neighbours either way.
* **All four chosen by the labels, held out.** The labelled classes are split in two halves; the
  metric is fitted on one half and the distance, linkage and cut chosen (and scored, by adjusted
  Rand index) on the other half's items, which the metric has not seen; then the halves swap. The
  shrinkage, distance and linkage with the best mean held-out score win, plain cosine and average
  linkage included, so the whitening, the shared neighbours and the chaining are used only where
  they help on classes they were not fitted on, which is the situation of the unlabelled classes.
  The shared neighbours are a candidate only where every class in the tree is whole: not on a
  sampled tree, nor where a label has more items than the fit takes (a held-out class thinned to
  a sample looks sparser than the unlabelled classes are).

The same cut tells known from new: an unlabelled item that falls among labelled items of a label
continues that label (the loop's suggestions for it are kept); one in a group with no labelled
items belongs, as far as the labels can tell, to a class nobody has named yet, so it is not
suggested for any known label. Those groups are the proposals. So is a branch of a group's tree
that holds no labelled item but joins labelled ones below the cut: it may be more of that label or
an unnamed object whose views look like a named one's, which the labels cannot tell apart, so its
items do not continue the label either; the curator names the branch whole. A group well over the size of a
typical labelled class is more likely two classes than one and is cut in parts along its own tree;
the cut is chosen on the classes named so far, the tightest ones, so it leaves looser classes in
pieces: a group smaller than a typical class climbs the tree while the node above holds no labelled
item and no more than a typical class (only where no class in the tree is thinned to a sample, and
not when it lowers the held-out classes' score). The proposals come in order of their size capped at that typical size (a proposal names the most
items per action), and among equals the smaller first: the one least likely to hold two classes. A few thousand
unlabelled items are clustered at once (the clustering holds all their pairwise distances); beyond
``max_items`` a random sample of that many is clustered and every other unlabelled item joins the group
of its nearest sampled item when it lies within the cut, so the gate also holds on large collections.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


#: Linkages whose merge heights are cosine distances, so one cut means the same for every row.
LINKAGES = {"average", "single", "complete", "weighted"}
#: "cosine": the cosine distance in the chosen metric; "shared": one minus the share of nearest
#: neighbours two items have in common (see shared_neighbours).
DISTANCES = {"cosine", "shared"}


@dataclass(frozen=True)
class RegroupConfig:
    """Options of the regrouping. Each is validated when the config is made."""

    shrinks: tuple[float, ...] = (0.1, 0.3, 0.6, 1.0)  # candidate shrinkages; 1.0 is the plain cosine
    linkages: tuple[str, ...] = ("average", "single")  # candidate linkages of the tree (scipy's names)
    distances: tuple[str, ...] = ("cosine", "shared")  # candidate distances: plain cosine, or shared nearest neighbours
    min_labels: int = 4  # labelled classes needed (each half of the split holds at least two)
    min_per_label: int = 3  # a label with fewer items does not teach the metric
    max_fit_per_label: int = 40  # labelled items per label used to fit (a sample of the larger ones)
    max_items: int = 6000  # most unlabelled items clustered at once (a random sample beyond; the rest join their nearest)
    min_group: int = 3  # smaller groups are left to the map
    climb: bool = True  # a group smaller than a typical class takes in the tree's branches above it up to that size (see climb)
    cuts: int = 41  # merge distances tried (quantiles of the merge heights)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.shrinks or not all(0.0 < s <= 1.0 for s in self.shrinks):
            raise ValueError(f"shrinks={self.shrinks!r}: each must be in (0, 1]")
        if not self.linkages or not set(self.linkages) <= LINKAGES:
            raise ValueError(f"linkages={self.linkages!r}: each must be one of {sorted(LINKAGES)}")
        if not self.distances or not set(self.distances) <= DISTANCES:
            raise ValueError(f"distances={self.distances!r}: each must be one of {sorted(DISTANCES)}")
        for name, lo in (("min_labels", 4), ("min_per_label", 2), ("max_fit_per_label", 2), ("max_items", 2), ("min_group", 1), ("cuts", 3)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name}={v!r}: must be an integer >= {lo}")


@dataclass
class Regrouping:
    """The unlabelled rows regrouped, largest group first, and how the choice was made."""

    groups: list[np.ndarray]  # row indices into the arrays given, one array per group
    continues: np.ndarray  # per row: the label whose labelled items share its group, -1 if none
    shrink: float  # the chosen shrinkage (1.0: plain cosine)
    threshold: float  # the chosen merge distance
    heldout_ari: float  # the chosen setting's mean ARI on the held-out half of the labelled classes
    plain_ari: float  # the plain cosine's, for comparison
    scores: dict[float, float] = field(default_factory=dict)  # shrink -> mean held-out ARI (the chosen distance and linkage)
    seconds: float = 0.0
    linkage: str = "average"  # the chosen linkage
    beside: list[int] = field(default_factory=list)  # per group: -1, or the label of the labelled items a branch joins
    distance: str = "cosine"  # the chosen distance ("shared": shared nearest neighbours)
    neighbours: int = 0  # the shared-neighbour distance's k
    climb: bool = False  # whether the groups climbed (offered, and the held-out classes did not lose by it)
    climbed: int = 0  # groups of the cut that climbed the tree (each took in at least one branch above it)

    def summary(self) -> dict[str, Any]:
        return {
            "groups": len(self.groups),
            "items": int(sum(len(g) for g in self.groups)),
            "shrink": self.shrink,
            "linkage": self.linkage,
            "distance": self.distance,
            "neighbours": self.neighbours,
            "climb": self.climb,
            "climbed": self.climbed,
            "threshold": round(self.threshold, 4),
            "heldout_ari": round(self.heldout_ari, 4),
            "plain_ari": round(self.plain_ari, 4),
            "seconds": round(self.seconds, 2),
        }


def whitening(z: np.ndarray, y: np.ndarray, shrink: float) -> np.ndarray | None:
    """``S_w^{-1/2}`` of the labelled rows ``z`` with labels ``y``, the within-class scatter shrunk
    towards its mean variance by ``shrink``; None for the plain cosine (``shrink`` 1)."""
    if shrink >= 1.0:
        return None
    classes, inv = np.unique(y, return_inverse=True)
    means = np.zeros((len(classes), z.shape[1]))
    np.add.at(means, inv, z)
    means /= np.bincount(inv)[:, None]
    r = z - means[inv]
    sw = r.T @ r / max(len(r) - len(classes), 1)
    sw = (1.0 - shrink) * sw + shrink * (np.trace(sw) / sw.shape[0]) * np.eye(sw.shape[0])
    w, v = np.linalg.eigh(sw)
    return (v / np.sqrt(np.maximum(w, 1e-12))) @ v.T


def transform(z: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    q = z if w is None else z @ w
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)


def cosine_condensed(q: np.ndarray, *, block: int = 512) -> np.ndarray:
    """The condensed cosine distances of the rows of ``q`` (``scipy.spatial.distance.pdist(q,
    "cosine")`` clipped at 0), as matrix products on normalised rows: the same numbers up to
    rounding, several times faster than pdist's pair-by-pair loop on thousands of rows."""
    x = np.asarray(q, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    n = len(x)
    out = np.empty(n * (n - 1) // 2)
    at = 0
    for i0 in range(0, n - 1, block):
        g = x[i0 : i0 + block] @ x[i0:].T  # the block's rows against themselves and every later row
        for i in range(i0, min(i0 + block, n - 1)):
            row = g[i - i0, i - i0 + 1 :]
            np.subtract(1.0, row, out=out[at : at + len(row)])
            at += len(row)
    np.maximum(out, 0.0, out=out)
    return out


def _tree(q: np.ndarray, method: str = "average") -> np.ndarray:
    return _trees(q, (method,))["cosine", method]


def shared_neighbours(nb: np.ndarray) -> np.ndarray:
    """The condensed distances ``1 - |N(i) & N(j)| / k`` of the rows whose ``k`` nearest
    neighbours are ``nb`` (``[n, k]``). Two items of one class tend to have the same neighbours
    even where the cosine between them is no smaller than between two classes (a face under other
    light, an object from another side): the shared-neighbour distance follows a class's own
    density, where one cosine threshold treats tight and loose classes alike."""
    from scipy.sparse import csr_matrix

    n, k = nb.shape
    a = csr_matrix((np.ones(n * k, np.float32), (np.repeat(np.arange(n), k), nb.ravel())), shape=(n, n))
    s = (a @ a.T).tocoo()
    up = s.row < s.col
    i, j = s.row[up].astype(np.int64), s.col[up].astype(np.int64)
    out = np.ones(n * (n - 1) // 2)
    out[n * i - i * (i + 1) // 2 + (j - i - 1)] = 1.0 - s.data[up] / k
    return out


#: The cosine's share of the shared-neighbour distance: it only orders pairs with as many shared
#: neighbours (at most 0.002, under one shared neighbour's step of 1/k for k <= 50).
TIE_BREAK = 1e-3


def _nearest(q: np.ndarray, k: int) -> np.ndarray:
    """``[n, k]``: each row's ``k`` nearest rows of ``q`` (rows L2-normalised, so cosine order),
    itself among them: the project's exact FAISS search."""
    from corral.pipeline.knn import FaissParams, knn_query

    return knn_query(q, q, k=k, method="faiss", faiss_params=FaissParams(index_factory="Flat"))[0]


def _trees(q: np.ndarray, methods: tuple[str, ...], distances: tuple[str, ...] = ("cosine",), k: int = 10) -> dict[tuple[str, str], np.ndarray]:
    """One tree per distance and linkage over the rows of ``q`` (the cosines computed once)."""
    from scipy.cluster.hierarchy import linkage

    d = cosine_condensed(q)
    out = {}
    for dist in distances:
        dd = d if dist == "cosine" else shared_neighbours(_nearest(q, k)) + TIE_BREAK * d
        for m in methods:
            out[dist, m] = linkage(dd, m)
    return out


def _best_cut(tree: np.ndarray, y: np.ndarray, cuts: int, *, keep: int | None = None) -> tuple[float, float]:
    """(ARI, merge distance) of the best cut of ``tree`` against the labels ``y`` of its first
    ``keep`` leaves (all by default); on a tie, the finer cut."""
    from scipy.cluster.hierarchy import fcluster
    from sklearn.metrics import adjusted_rand_score

    best = (-1.0, float(tree[-1, 2]))
    for t in np.unique(np.quantile(tree[:, 2], np.linspace(0.0, 1.0, cuts))):
        s = float(adjusted_rand_score(y, fcluster(tree, t, "distance")[: keep if keep is not None else len(y)]))
        if s > best[0]:
            best = (s, float(t))
    return best


Scored = dict[tuple[str, str], tuple[float, float, float]]


def _climbed_ari(tree: np.ndarray, y: np.ndarray, cut: float, limit: float | None) -> float:
    """ARI against ``y`` (the first leaves' labels) of the cut at ``cut`` after the climb (see
    climb) with no leaf labelled; -1 when no limit is given (the climb is not on offer)."""
    from sklearn.metrics import adjusted_rand_score

    if limit is None:
        return -1.0
    # with no leaf labelled every leaf gets the node its group climbed to, found from the tree and
    # the cut alone: the groups given are not read (no fcluster of the same cut is needed)
    part, _ = climb(tree, np.zeros(len(tree) + 1, np.int64), 0, cut, limit)
    return float(adjusted_rand_score(y, part[: len(y)]))


def _scored_cuts(
    z: np.ndarray, y: np.ndarray, ra: np.ndarray, rb: np.ndarray, free: np.ndarray, shrink: float, cuts: int, methods: tuple[str, ...], distances: tuple[str, ...], k: int, limit: float | None = None
) -> Scored:
    """Fit the metric on rows ``ra``; cluster rows ``rb`` together with the unlabelled ``free`` (so
    the held-out classes sit among as many others as the real remainder does); per distance and
    linkage, the best (ARI on ``rb``'s labels, merge distance) and the ARI of that cut after the
    climb up to ``limit`` items (-1 without a limit)."""
    both = np.concatenate([rb, free])
    trees = _trees(transform(z[both], whitening(z[ra], y[ra], shrink)), methods, distances, k)
    out = {}
    for key, t in trees.items():
        ari, cut = _best_cut(t, y[rb], cuts, keep=len(rb))
        out[key] = (ari, cut, _climbed_ari(t, y[rb], cut, limit))
    return out


def neighbour_count(y: np.ndarray) -> int:
    """The shared-neighbour distance's ``k``: the median number of items per label among the rows
    that teach the metric (an item's neighbours should be about one class), between 3 and 50."""
    return int(np.clip(np.median(np.unique(y, return_counts=True)[1]), 3, 50))


def class_size(y: np.ndarray, continues: np.ndarray) -> float:
    """The size of a typical class: per label, its labelled items plus the unlabelled items the
    regrouping says continue it; the median over the labels. A curator names part of a class at a
    time (one cluster of it, one lasso), so the labelled items alone undercount a class: on a
    collection of 18 views per object named half at a time they said 9, and every unnamed object
    was proposed in two halves."""
    labelled = y >= 0
    names = np.unique(y[labelled])
    if len(names) == 0:
        return 1.0
    size = np.bincount(y[labelled], minlength=int(names.max()) + 1)
    more = continues[(continues >= 0) & ~labelled]
    if len(more):
        size = size + np.bincount(more, minlength=len(size))[: len(size)]
    return float(np.median(size[names]))


def split_oversized(rows: np.ndarray, q: np.ndarray, typical: float) -> list[np.ndarray]:
    """A group well over the size of a typical labelled class (more than 1.5 times) is more likely
    two or more classes than one: it is cut along its own tree into about ``len / typical`` parts.
    Splitting one class costs the curator one more naming; two classes left merged cost a split and
    a selection, so the doubt is resolved towards splitting."""
    from scipy.cluster.hierarchy import fcluster

    parts = int(round(len(rows) / max(typical, 1.0)))
    if len(rows) <= 1.5 * typical or parts < 2:
        return [rows]
    cut = fcluster(_tree(q), parts, "maxclust")
    return [rows[cut == k] for k in np.unique(cut)]


def _nodes(tree: np.ndarray, n_labelled: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per node of ``tree`` (leaves first, then scipy's merges; the first ``n_labelled`` leaves
    labelled): its labelled leaves, its leaves, its parent (-1 for the root) and its merge height."""
    n = len(tree) + 1
    m = 2 * n - 1
    kids = tree[:, :2].astype(np.int64)
    lab = np.zeros(m, np.int64)
    lab[:n_labelled] = 1
    size = np.ones(m, np.int64)
    size[n:] = tree[:, 3].astype(np.int64)
    height = np.zeros(m)
    height[n:] = tree[:, 2]
    parent = np.full(m, -1, np.int64)
    parent[kids[:, 0]] = parent[kids[:, 1]] = np.arange(n, m)
    for i, (a, b) in enumerate(kids.tolist()):  # children come before their parent
        lab[n + i] = lab[a] + lab[b]
    return lab, size, parent, height


def unlabelled_branches(tree: np.ndarray, n_labelled: int, cut: float, min_group: int) -> np.ndarray:
    """Per leaf of ``tree`` (the first ``n_labelled`` leaves labelled), the number of the branch it
    belongs to, -1 for none. A branch is a subtree of at least ``min_group`` leaves, none labelled,
    that joins labelled leaves below the cut: a group of the cut that holds labelled items may also
    hold a part nobody has named, such as the views of an object that look like a named one's, and
    such a part is a proposal of its own."""
    n = len(tree) + 1
    lab, size, parent, height = _nodes(tree, n_labelled)
    out = np.full(n, -1, np.int64)
    for node in range(2 * n - 1):
        p = parent[node]
        if lab[node] or size[node] < min_group or p < 0 or not lab[p] or height[p] > cut:
            continue
        stack = [node]
        while stack:
            k = stack.pop()
            if k < n:
                out[k] = node
            else:
                stack += [int(tree[k - n, 0]), int(tree[k - n, 1])]
    return out


def climb(tree: np.ndarray, part: np.ndarray, n_labelled: int, cut: float, limit: float) -> tuple[np.ndarray, int]:
    """The groups of the cut ``part`` (per leaf of ``tree``, the first ``n_labelled`` leaves labelled)
    with each group of unlabelled leaves taken up the tree while the node above holds no labelled
    leaf and at most ``limit`` leaves (a typical class's size). Returns the new group per leaf and how
    many groups climbed.

    The cut is chosen on the classes named so far, and those are the ones a curator could name
    first: the tightest. The classes left are looser, and the cut leaves them in pieces (8 and 2 of
    a person's 10 faces); each piece costs the curator a gesture and a name. A piece whose
    next branch up still fits in one class and holds nothing named is more likely the rest of its
    class than another class, so they are proposed together; a node over the size of a class is
    left alone, so two whole classes are never joined."""
    n = len(tree) + 1
    m = 2 * n - 1
    lab, size, parent, height = _nodes(tree, n_labelled)
    # Top down (a parent's number is above its children's): each node's group of the cut, and the
    # highest node it may climb to.
    group = np.arange(m)
    top = np.arange(m)
    ok = (lab == 0) & (size <= limit)
    for node in range(m - 2, -1, -1):
        p = parent[node]
        if height[p] <= cut:
            group[node] = group[p]
        if ok[node] and ok[p]:
            top[node] = top[p]
    leaves = np.arange(n_labelled, n)
    g = group[leaves]
    free = lab[g] == 0  # leaves in a group with labelled leaves keep it
    out = part.copy()
    base = int(part.max()) + 1  # new group numbers: base + the node the group climbed to
    out[leaves[free]] = base + np.where(ok[g[free]], top[g[free]], g[free])
    roots = np.unique(g[free])
    return out, int((ok[roots] & (top[roots] != roots)).sum())


def _fit_rows(y: np.ndarray, labelled: np.ndarray, cfg: RegroupConfig, rng: np.random.Generator) -> np.ndarray:
    """The labelled rows that teach the metric: labels with enough items, at most a sample of each."""
    rows = []
    for c in np.unique(y[labelled]):
        r = np.flatnonzero(labelled & (y == c))
        if len(r) >= cfg.min_per_label:
            rows.append(rng.choice(r, cfg.max_fit_per_label, replace=False) if len(r) > cfg.max_fit_per_label else r)
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, np.int64)


def regroup(z: np.ndarray, labels: np.ndarray, *, config: RegroupConfig | None = None) -> Regrouping | None:
    """Regroup the unlabelled rows of ``z`` (features, rows L2-normalised) in a metric learnt from the
    labelled ones. ``labels``: an integer label per row, -1 where there is none. None when the labels are too few to choose
    a metric (fewer than ``min_labels`` labels with ``min_per_label`` items) or too few unlabelled
    rows to regroup."""
    from scipy.cluster.hierarchy import fcluster

    cfg = config or RegroupConfig()
    t0 = time.perf_counter()
    y = np.asarray(labels, dtype=np.int64)
    labelled = y >= 0
    free = np.flatnonzero(~labelled)
    if len(free) < cfg.min_group:
        return None
    rng = np.random.default_rng(cfg.seed)
    # More unlabelled rows than one clustering holds: a random sample is regrouped and every other
    # row joins its nearest sampled row's group (below), so the known/new gate holds at any size.
    rest = np.zeros(0, np.int64)
    if len(free) > cfg.max_items:
        keep = np.zeros(len(free), bool)
        keep[rng.choice(len(free), cfg.max_items, replace=False)] = True
        free, rest = free[keep], free[~keep]
    fit = _fit_rows(y, labelled, cfg, rng)
    names = np.unique(y[fit])
    if len(names) < cfg.min_labels:
        return None
    halves = np.array_split(rng.permutation(names), 2)
    methods = tuple(dict.fromkeys(("average", *cfg.linkages)))  # the plain average linkage is the baseline
    # and the plain cosine. The shared-neighbour distance needs every item of a class in the tree:
    # a sample thins each class's neighbourhood, and its neighbours are then other classes'. So it
    # is not used on a sampled tree (more unlabelled rows than max_items), nor where a label has more
    # items than the fit takes (a held-out class thinned to a sample would look sparser than the
    # unlabelled classes are, and the held-out choice would not hold for them).
    thinned = len(rest) > 0 or bool((np.bincount(y[labelled]) > cfg.max_fit_per_label).any())
    distances = ("cosine",) if thinned else tuple(dict.fromkeys(("cosine", *cfg.distances)))
    candidates = [d for d in cfg.distances if d in distances] or ["cosine"]
    nk = neighbour_count(y[fit])
    # The climb (see climb) compares a group with the size of a whole class, so it too is offered
    # only where every class in the tree is whole (on MNIST, thinned, it took the loop from 74 to 98
    # actions at 90%: groups of several digits up to a digit's size). It is scored held out like
    # the rest: the held-out classes are cut at their best cut, then climbed with no item labelled,
    # up to the size of a typical label (its labelled items: the typical class of the final cut also
    # counts the items that continue a label, not known yet). It is kept unless it lowers their
    # ARI: the held-out classes, named first, are mostly whole at their best cut already, so they
    # cannot show the climb's gain on the looser classes left, only its harm (two small classes
    # joined).
    limit = float(np.median(np.unique(y[labelled], return_counts=True)[1])) if cfg.climb and not thinned else None
    climbs: dict[tuple[float, str, str], float] = {}
    scores: dict[tuple[float, str, str], float] = {}
    cuts: dict[tuple[float, str, str], float] = {}
    for s in (*cfg.shrinks, *(() if 1.0 in cfg.shrinks else (1.0,))):
        got = []
        for a, b in ((halves[0], halves[1]), (halves[1], halves[0])):
            ra, rb = fit[np.isin(y[fit], a)], fit[np.isin(y[fit], b)]
            got.append(_scored_cuts(z, y, ra, rb, free, s, cfg.cuts, methods, distances, nk, limit))
        for key in got[0]:
            scores[(s, *key)] = float(np.mean([g[key][0] for g in got]))
            cuts[(s, *key)] = float(np.mean([g[key][1] for g in got]))
            climbs[(s, *key)] = float(np.mean([g[key][2] for g in got]))
    # On a tie, the plainer metric, then the first distance and linkage listed.
    chosen = max(
        ((s, d, m) for s in cfg.shrinks for d in candidates for m in cfg.linkages),
        key=lambda c: (scores[c], c[0], -candidates.index(c[1]), -cfg.linkages.index(c[2])),
    )
    shrink, distance, method = chosen
    cut = cuts[chosen]
    # The cut is applied as it was chosen: over the labelled rows and the unlabelled ones together.
    # Unlabelled items among a group's labelled ones continue its label (the model's suggestions
    # serve them); the groups made of unlabelled items only, and the unlabelled branches inside the
    # others, are the proposals.
    both = np.concatenate([fit, free])
    w = whitening(z[fit], y[fit], shrink)
    q = transform(z[both], w)
    tree = _trees(q, (method,), (distance,), nk)[distance, method]
    part = fcluster(tree, cut, "distance")
    br_all = unlabelled_branches(tree, len(fit), cut, cfg.min_group)
    branch = br_all[len(fit) :]
    if len(rest):
        from corral.pipeline.knn import knn_query

        qr = transform(z[rest], w)
        near, d, _ = knn_query(q, qr, k=1, method="faiss")
        # rows L2-normalised: cosine distance = squared Euclidean / 2, the tree's distance (the
        # cosine: a sampled tree is never on shared neighbours, above)
        within = d[:, 0].astype(np.float64) ** 2 / 2 <= cut
        joined = np.where(within, part[near[:, 0]], 0)  # 0: no group (fcluster numbers from 1)
        branch = np.concatenate([branch, np.where(within, br_all[near[:, 0]], -1)])
        free = np.concatenate([free, rest])
        part = np.concatenate([part, joined])
        q = np.concatenate([q, qr])
    taken = set(part[: len(fit)].tolist())
    pf = part[len(fit) :]
    continues = np.full(len(y), -1, dtype=np.int64)
    for k in taken:
        continues[free[pf == k]] = np.bincount(y[fit][part[: len(fit)] == k]).argmax()
    typical = class_size(y, continues)
    climbed = 0
    climbing = limit is not None and climbs[chosen] >= scores[chosen] - 1e-9
    if climbing:
        # Offered only where no class is thinned (see limit above), and kept by the held-out classes.
        # Groups with labelled items do not climb, so what continues a label stays as it is.
        tp, climbed = climb(tree, part, len(fit), cut, typical)
        pf = tp[len(fit) :]
    new: list[np.ndarray] = []
    for k in np.unique(pf):
        if k not in taken and k > 0:
            new += split_oversized(free[pf == k], q[len(fit) :][pf == k], typical)
    # Unlabelled branches inside a group that holds labelled items (see unlabelled_branches): after
    # the groups among no labelled item, as they may as well be more of the label they join (the
    # typical class size above still counts them with that label).
    branches = [free[branch == b] for b in np.unique(branch[branch >= 0])]

    at = np.full(len(y), -1, np.int64)  # row -> its row of q
    at[free] = len(fit) + np.arange(len(free))

    def spread(g: np.ndarray) -> float:
        # the mean cosine distance of the group's rows to their mean direction, in the chosen metric
        return float(1.0 - np.linalg.norm(q[at[g]].mean(0)))

    def best_first(gs: list[np.ndarray]) -> list[np.ndarray]:
        # a group about as large as a labelled class is most likely one whole class; among groups
        # of one size, the tightest first: two halves of two classes that the cut put together
        # lie farther apart than one class's items do
        return sorted((g for g in gs if len(g) >= cfg.min_group), key=lambda g: (-min(len(g), typical), len(g), spread(g), int(g[0])))

    new, branches = best_first(new), best_first(branches)
    beside = [-1] * len(new) + [int(continues[g[0]]) for g in branches]
    # A branch's items do not continue the label they lie beside: whether they are more of it or a
    # look-alike nobody named, the labels cannot tell, so they are proposed as a group (with the
    # label beside it) and not suggested as that label. Only items among the labelled ones continue.
    continues[free[branch >= 0]] = -1
    per_shrink = {s: scores[s, distance, method] for s in cfg.shrinks}
    return Regrouping(new + branches, continues, shrink, cut, scores[chosen], scores[1.0, "cosine", "average"], per_shrink, time.perf_counter() - t0, method, beside, distance, nk, climbing, climbed)
