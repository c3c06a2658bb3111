"""The unlabelled items regrouped in a metric the labels taught (corral.pipeline.regroup)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from corral.pipeline.regroup import RegroupConfig, regroup, split_oversized, transform, whitening


def nuisance_classes(n_classes: int = 16, per: int = 30, dim: int = 24, seed: int = 0):
    """Classes that differ a little in every direction and vary a lot along a few directions that
    all of them share (as one object varies with pose or light): on the plain cosine two items of
    one class can be farther apart than items of two classes."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, dim))
    shared = np.linalg.qr(rng.normal(size=(dim, 3)))[0].T  # three directions every class varies along
    x, y = [], []
    for c in range(n_classes):
        coef = rng.normal(scale=4.0, size=(per, 3))
        x.append(means[c] + coef @ shared + rng.normal(scale=0.3, size=(per, dim)))
        y += [c] * per
    x = np.concatenate(x)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.asarray(y)


def test_the_labels_teach_a_metric_that_separates_classes_nobody_named():
    z, y = nuisance_classes()
    labels = np.where(y < 8, y, -1)  # half the classes named, the other half not at all
    r = regroup(z, labels)
    assert r is not None and r.shrink < 1.0, r.summary()  # the whitening won on held-out classes
    assert r.heldout_ari > r.plain_ari + 0.1
    part = np.full(len(y), -1)
    for k, g in enumerate(r.groups):
        assert (labels[g] == -1).all()
        part[g] = k
    rest = labels == -1
    got = adjusted_rand_score(y[rest], part[rest])
    # the same cut on the plain cosine, for comparison
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    best_plain = max(adjusted_rand_score(y[rest], fcluster(linkage(pdist(z[rest], "cosine"), "average"), t, "distance")) for t in np.linspace(0.05, 1.5, 30))
    assert got >= 0.8 and got > best_plain + 0.3, (got, best_plain)
    # best first: sizes capped at a typical labelled class (30 here), the smaller first among equals
    keys = [(-min(len(g), 30), len(g)) for g in r.groups]
    assert keys == sorted(keys)


def test_plain_cosine_is_kept_where_whitening_does_not_help():
    rng = np.random.default_rng(1)
    means = rng.normal(size=(12, 16)) * 3
    z = np.concatenate([m + rng.normal(size=(20, 16)) for m in means])
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    y = np.repeat(np.arange(12), 20)
    r = regroup(z, np.where(y < 6, y, -1))
    assert r is not None
    part = np.full(len(y), -1)
    for k, g in enumerate(r.groups):
        part[g] = k
    assert adjusted_rand_score(y[y >= 6], part[y >= 6]) >= 0.95


def test_too_few_labels_give_no_regrouping():
    z, y = nuisance_classes()
    assert regroup(z, np.where(y < 3, y, -1)) is None  # 3 labels: the split needs 4
    assert regroup(z, np.full(len(y), -1)) is None


def test_more_unlabelled_rows_than_one_clustering_holds_are_sampled_and_the_rest_join_their_nearest():
    """A collection larger than max_items keeps the known/new gate: a sample is clustered, every
    other row joins its nearest sampled row's group. Before, the regrouping was skipped, and the
    loop's suggestions went out ungated (on MNIST, 403 items suggested at precision 0.25)."""
    z, y = nuisance_classes(n_classes=16, per=60)
    labels = np.where(y < 8, y, -1)
    # the named classes' leftovers: a third of each named class is still unlabelled
    rng = np.random.default_rng(2)
    for c in range(8):
        labels[rng.choice(np.flatnonzero(y == c), 20, replace=False)] = -1
    free = labels == -1
    full = regroup(z, labels)
    small = regroup(z, labels, config=RegroupConfig(max_items=200))
    assert full is not None and small is not None
    for r in (full, small):
        cont = r.continues >= 0
        # rows said to continue a label are of that label; rows of classes nobody named continue none
        assert (r.continues[cont] == y[cont]).mean() >= 0.95
        assert (r.continues[free & (y >= 8)] == -1).mean() >= 0.95
        assert cont[free & (y < 8)].mean() >= 0.6
    # every unlabelled row was considered, not only the sample: groups cover rows beyond the 200
    assert sum(len(g) for g in small.groups) > 200
    part = np.full(len(y), -1)
    for k, g in enumerate(small.groups):
        part[g] = k
    new = free & (y >= 8)
    assert adjusted_rand_score(y[new], part[new]) >= 0.7


def test_whitening_of_one_shrink_is_the_plain_cosine():
    z, y = nuisance_classes(n_classes=4, per=10)
    assert whitening(z, y, 1.0) is None
    assert np.allclose(transform(z, None), z)
    w = whitening(z, y, 0.3)
    assert w.shape == (z.shape[1], z.shape[1]) and np.allclose(w, w.T)


@pytest.mark.parametrize("bad", [{"shrinks": ()}, {"shrinks": (0.0,)}, {"min_labels": 3}, {"cuts": 2}, {"max_items": True}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        RegroupConfig(**bad)


def test_the_loop_suggests_known_labels_only_and_proposes_the_new_classes():
    """Eight classes named on two thirds of their items, eight never named: the model's suggestions
    keep to the leftovers of the named ones, and the regrouping proposes the others."""
    from corral.pipeline.learn import learn
    from corral.pipeline.loop import regroup_rest

    z, y = nuisance_classes(n_classes=16, per=30)
    rng = np.random.default_rng(3)
    named = (y < 8) & (rng.random(len(y)) < 0.67)
    labels = [f"c{c}" if n else None for c, n in zip(y, named)]
    res = learn(vectors=z, labels=labels)
    rg = regroup_rest(res)
    assert rg is not None
    sugg = np.concatenate([g.rows for g in res.groups]) if res.groups else np.zeros(0, np.int64)
    assert len(sugg) and (y[sugg] < 8).all()  # no item of a class nobody named is suggested
    assert all((y[g.rows] == int(g.label[1:])).mean() >= 0.95 for g in res.groups)
    new = np.concatenate(rg.groups)
    assert (y[new] >= 8).mean() >= 0.9 and len(set(y[new].tolist())) >= 6
    # The estimate of the model's accuracy on what is left counts the rows of classes nobody named
    # as misses (the model can only name known labels): close to what it really gets right.
    free = ~res.labelled
    realised = float((np.asarray(res.classes)[res.predicted[free]] == np.asarray([f"c{c}" for c in y[free]])).mean())
    plain = float(res.confidence[free].mean())  # the estimate without the regrouping
    assert realised < 0.5 < plain  # most of what is left is of classes nobody named
    assert abs(res.estimated_accuracy_left - realised) < 0.1 < abs(plain - realised)


def test_with_too_few_labels_to_tell_new_classes_the_loop_gives_no_estimate():
    from corral.pipeline.learn import learn
    from corral.pipeline.loop import regroup_rest

    z, y = nuisance_classes(n_classes=8, per=20)
    labels = [f"c{c}" if c < 3 and k % 2 else None for k, c in enumerate(y)]  # three labels named
    res = learn(vectors=z, labels=labels)
    assert res.estimated_accuracy_left is not None
    assert regroup_rest(res) is None and res.groups == [] and res.estimated_accuracy_left is None


def test_a_group_twice_the_size_of_a_labelled_class_is_cut_in_two():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=16), rng.normal(size=16)
    q = np.concatenate([a + rng.normal(scale=0.2, size=(20, 16)), b + rng.normal(scale=0.2, size=(20, 16))])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rows = np.arange(100, 140)
    parts = split_oversized(rows, q, typical=20.0)
    assert sorted(sorted(p.tolist()) for p in parts) == [list(range(100, 120)), list(range(120, 140))]
    # up to 1.5 times the typical size a group stays whole
    assert [p.tolist() for p in split_oversized(rows[:28], q[:28], typical=20.0)] == [rows[:28].tolist()]


def test_merged_pairs_of_unnamed_classes_come_back_as_separate_proposals_before_the_rest():
    """The named classes lie far apart, so the cut the labels choose is coarse; the unnamed classes
    come in close look-alike pairs, which that cut merges into double-size groups. The size of the
    labelled classes says those are two classes each, so the proposals come back one class each,
    whole single classes first."""
    rng = np.random.default_rng(4)
    dim, per = 32, 20
    x, y = [], []
    for c in range(8):  # named: one class per centre
        x.append(rng.normal(size=dim) * 2.0 + rng.normal(scale=0.4, size=(per, dim)))
        y += [c] * per
    for c in range(8):  # nobody named these: two look-alike classes per centre
        centre = rng.normal(size=dim) * 2.0
        for twin in range(2):
            x.append(centre + rng.normal(scale=0.35, size=dim) + rng.normal(scale=0.2, size=(per, dim)))
            y += [8 + 2 * c + twin] * per
    z = np.concatenate(x)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    y = np.asarray(y)
    labels = np.where(y < 8, y, -1)
    r = regroup(z, labels)
    assert r is not None
    pure = [g for g in r.groups if len(set(y[g].tolist())) == 1 and len(g) >= 0.9 * per]
    assert len(pure) >= 12, [(len(g), sorted(set(y[g].tolist()))) for g in r.groups]
    first = r.groups[:8]
    assert all(len(set(y[g].tolist())) == 1 for g in first), [(len(g), sorted(set(y[g].tolist()))) for g in first]


def test_classes_named_half_at_a_time_still_come_back_whole():
    """Curators name part of a class at a time (one cluster of it): with half of each named class
    labelled, the labelled counts alone say a class has half its real size, and every unnamed
    class was proposed in two halves. Counting the unlabelled items that continue each label, the
    typical class is whole again and so are the proposals."""
    from corral.pipeline.regroup import class_size

    rng = np.random.default_rng(7)
    dim, per = 32, 18
    x, y = [], []
    for c in range(16):
        x.append(rng.normal(size=dim) * 2.0 + rng.normal(scale=0.4, size=(per, dim)))
        y += [c] * per
    z = np.concatenate(x)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    y = np.asarray(y)
    labels = np.full(len(y), -1)
    for c in range(10):  # ten classes named, each half: the nine items nearest one of its items
        rows = np.flatnonzero(y == c)
        near = rows[np.argsort(((z[rows] - z[rows[0]]) ** 2).sum(1))[: per // 2]]
        labels[near] = c
    r = regroup(z, labels)
    assert r is not None
    assert class_size(labels, r.continues) == per  # not the 9 labelled per label
    unnamed = [g for g in r.groups if y[g[0]] >= 10]
    whole = [g for g in unnamed if len(g) == per and len(set(y[g].tolist())) == 1]
    assert len(whole) == 6, [(len(g), sorted(set(y[g].tolist()))) for g in r.groups]


def pose_rings(n_classes: int = 16, per: int = 24, dim: int = 32, seed: int = 11):
    """Each class is one object seen from every side: its items lie on a ring (a turntable sweep)
    around the object's centre, the ring wider than the gap between two objects' centres. Two
    views from opposite sides of one object are farther apart than views of two objects from the
    same side, so only a linkage that follows each ring from neighbour to neighbour keeps it whole."""
    rng = np.random.default_rng(seed)
    plane = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T  # the sweep: the same two directions for all
    x, y = [], []
    for c in range(n_classes):
        centre = rng.normal(size=dim) * 0.5
        centre -= plane.T @ (plane @ centre)  # apart across the sweep's plane, not within it
        angle = np.linspace(0, 2 * np.pi, per, endpoint=False) + rng.uniform(0, 2 * np.pi)
        ring = np.stack([np.cos(angle), np.sin(angle)], 1) @ plane * 3.0
        x.append(centre + ring + rng.normal(scale=0.05, size=(per, dim)))
        y += [c] * per
    z = np.concatenate(x)
    return z / np.linalg.norm(z, axis=1, keepdims=True), np.asarray(y)


def test_the_labels_choose_the_linkage_single_for_classes_on_a_curve_average_for_blobs():
    z, y = pose_rings()
    r = regroup(z, np.where(y < 8, y, -1))
    assert r is not None and r.linkage == "single", r.summary()
    whole = [g for g in r.groups if len(g) == 24 and len(set(y[g].tolist())) == 1]
    assert len(whole) == 8, [(len(g), sorted(set(y[g].tolist()))) for g in r.groups]
    # the same rings, average linkage only and no climb: the rings come back cut in arcs
    avg = regroup(z, np.where(y < 8, y, -1), config=RegroupConfig(linkages=("average",), climb=False))
    assert avg is not None and sum(len(g) == 24 and len(set(y[g].tolist())) == 1 for g in avg.groups) < 8
    # with the climb, the arcs (each smaller than a ring) go up the tree to their whole ring
    up = regroup(z, np.where(y < 8, y, -1), config=RegroupConfig(linkages=("average",)))
    assert up is not None and up.climbed > 0
    assert sum(len(g) == 24 and len(set(y[g].tolist())) == 1 for g in up.groups) == 8
    # compact blobs with a little noise between them: chaining would merge them, average stays
    z2, y2 = nuisance_classes()
    r2 = regroup(z2, np.where(y2 < 8, y2, -1))
    assert r2 is not None and r2.linkage == "average", r2.summary()


def test_an_unnamed_class_beside_a_named_look_alike_comes_back_as_its_own_proposal():
    """A named class and an unnamed one that looks like it fall in one group at the cut the labels
    choose; the unnamed one's items, a branch of that group's tree with no labelled item, are a
    proposal of their own instead of being taken for the named label's."""
    rng = np.random.default_rng(5)
    dim, per = 32, 20
    x, y = [], []
    for c in range(8):  # eight classes, far apart, all named
        x.append(rng.normal(size=dim) * 2.0 + rng.normal(scale=0.3, size=(per, dim)))
        y += [c] * per
    twin_of = x[0].mean(0) + rng.normal(scale=0.5, size=dim)  # class 8: nobody named it, it looks like class 0
    x.append(twin_of + rng.normal(scale=0.15, size=(per, dim)))
    y += [8] * per
    z = np.concatenate(x)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    y = np.asarray(y)
    labels = np.where(y < 8, y, -1)
    r = regroup(z, labels, config=RegroupConfig(linkages=("average",)))
    assert r is not None
    twin = np.flatnonzero(y == 8)
    k = next(k for k, g in enumerate(r.groups) if sorted(g.tolist()) == twin.tolist())
    assert r.beside[k] == 0  # proposed with the label it lies beside
    assert (r.continues[twin] == -1).all()  # and not taken for that label: the model does not suggest it as one


def spread_classes(seed: int = 0, dim: int = 32, per: int = 15):
    """Eight tight classes close to one another and eight loose ones far apart: two items of a
    loose class are farther apart than two tight classes are, so no one cosine cut keeps the loose
    classes whole without merging the tight ones (as faces under other light beside objects seen
    from one side)."""
    rng = np.random.default_rng(seed)
    hub = rng.normal(size=dim)
    x, y = [], []
    for c in range(8):
        x.append(hub + rng.normal(scale=0.2, size=dim) + rng.normal(scale=0.05, size=(per, dim)))
        y += [c] * per
    for c in range(8, 16):
        x.append(rng.normal(size=dim) + rng.normal(scale=0.3, size=(per, dim)))
        y += [c] * per
    z = np.concatenate(x)
    return z / np.linalg.norm(z, axis=1, keepdims=True), np.asarray(y)


def test_the_labels_choose_shared_neighbours_where_classes_differ_in_spread():
    z, y = spread_classes()
    labels = np.where(y % 2 == 0, y, -1)  # half the tight and half the loose classes named
    rest = labels == -1

    def ari(r):
        part = np.full(len(y), -1)
        for k, g in enumerate(r.groups):
            part[g] = k
        p = part[rest]
        p[p < 0] = 1000 + np.arange((p < 0).sum())  # an item in no proposal is a group of its own
        return adjusted_rand_score(y[rest], p)

    r = regroup(z, labels)
    assert r is not None and r.distance == "shared" and r.neighbours == 15, r.summary()
    assert r.summary()["distance"] == "shared"
    cos = regroup(z, labels, config=RegroupConfig(distances=("cosine",)))
    assert cos is not None and cos.distance == "cosine"
    assert ari(r) >= 0.85 and ari(r) > ari(cos) + 0.3, (ari(r), ari(cos))
    # more unlabelled rows than one clustering takes: a sample would thin every class's
    # neighbourhood, so the cosine alone is used
    small = regroup(z, labels, config=RegroupConfig(max_items=60))
    assert small is not None and small.distance == "cosine" and sum(len(g) for g in small.groups) > 60
    # labels larger than the fit takes: the held-out classes would be thinned, so the cosine too
    thin = regroup(z, labels, config=RegroupConfig(max_fit_per_label=10))
    assert thin is not None and thin.distance == "cosine"


def test_among_proposals_of_one_size_the_tightest_comes_first():
    for z, y in (nuisance_classes(), spread_classes(), pose_rings()):
        labels = np.where(y % 2 == 0, y, -1)
        r = regroup(z, labels)
        assert r is not None
        fit = labels >= 0
        q = transform(z, whitening(z[fit], labels[fit], r.shrink))
        new = [g for g, b in zip(r.groups, r.beside) if b < 0]
        for a, b in zip(new, new[1:]):
            if len(a) == len(b):
                assert 1.0 - np.linalg.norm(q[a].mean(0)) <= 1.0 - np.linalg.norm(q[b].mean(0)) + 1e-6


@pytest.mark.parametrize("bad", [{"distances": ()}, {"distances": ("euclidean",)}])
def test_an_unknown_distance_is_refused(bad):
    with pytest.raises(ValueError, match="distances"):
        RegroupConfig(**bad)


@pytest.mark.parametrize("bad", [{"linkages": ()}, {"linkages": ("ward",)}])
def test_a_linkage_whose_heights_are_not_cosine_distances_is_refused(bad):
    with pytest.raises(ValueError, match="linkages"):
        RegroupConfig(**bad)


def halved_classes(seed: int = 0, dim: int = 32, per: int = 10):
    """Eight tight classes, named, and eight unnamed ones that each come in two halves (a person
    under two lights): the cut chosen on the tight named classes leaves every unnamed one in two."""
    rng = np.random.default_rng(seed)
    x, y = [], []
    for c in range(8):
        x.append(rng.normal(size=dim) + rng.normal(scale=0.15, size=(per, dim)))
        y += [c] * per
    for c in range(8, 16):
        centre = rng.normal(size=dim)
        for _ in range(2):
            x.append(centre + rng.normal(scale=0.45, size=dim) + rng.normal(scale=0.15, size=(per // 2, dim)))
            y += [c] * (per // 2)
    z = np.concatenate(x)
    return z / np.linalg.norm(z, axis=1, keepdims=True), np.asarray(y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pieces_of_a_class_smaller_than_a_typical_class_climb_the_tree_to_a_whole_class(seed):
    from corral.pipeline.regroup import climb

    z, y = halved_classes(seed)
    labels = np.where(y < 8, y, -1)
    r = regroup(z, labels)
    assert r is not None and r.climbed >= 8 and r.summary()["climbed"] == r.climbed and r.summary()["climb"] is True
    # every unnamed class proposed whole, and no proposal joins two classes
    assert sorted((len(g), len(set(y[g].tolist()))) for g in r.groups) == [(10, 1)] * 8, [(len(g), sorted(set(y[g].tolist()))) for g in r.groups]
    # without the climb the cut leaves them in halves
    flat = regroup(z, labels, config=RegroupConfig(climb=False))
    assert flat is not None and flat.climbed == 0
    assert sum(len(g) == 5 for g in flat.groups) >= 12, [len(g) for g in flat.groups]
    # the size of a typical class stops the climb; with no labelled item to stop it either, an
    # unlimited climb takes everything to the root
    from scipy.cluster.hierarchy import fcluster, linkage

    rows = np.concatenate([np.flatnonzero(labels >= 0), np.flatnonzero(labels < 0)])
    tree = linkage(z[rows], "average", metric="cosine")
    part = fcluster(tree, r.threshold, "distance")
    n_lab = int((labels >= 0).sum())
    got, _ = climb(tree, part, n_lab, r.threshold, 10)
    assert np.unique(got[n_lab:], return_counts=True)[1].max() == 10
    everything, _ = climb(tree, part, 0, r.threshold, 1e9)
    assert len(np.unique(everything)) == 1
    # labelled groups never climb: their labelled leaves keep their group
    assert (got[:n_lab] == part[:n_lab]).all()
    # labels larger than the fit takes, or a sampled tree: group sizes are not a whole class's, so
    # no climb
    for cfg in (RegroupConfig(max_fit_per_label=4), RegroupConfig(max_items=60)):
        thin = regroup(z, labels, config=cfg)
        assert thin is not None and not thin.climb and thin.climbed == 0


def test_a_climb_that_joins_two_held_out_classes_scores_lower():
    """The held-out score the climb must not lower: two small look-alike classes that the best cut
    keeps apart are joined by a climb up to twice their size, and the ARI says so."""
    from scipy.cluster.hierarchy import linkage

    from corral.pipeline.regroup import _best_cut, _climbed_ari

    rng = np.random.default_rng(5)
    dim = 32
    centre = rng.normal(size=dim)
    x = [centre + rng.normal(scale=0.25, size=dim) + rng.normal(scale=0.1, size=(4, dim)) for _ in range(2)]
    x.append(rng.normal(size=dim) + rng.normal(scale=0.1, size=(8, dim)))
    z = np.concatenate(x)
    y = np.repeat([0, 1, 2], [4, 4, 8])
    tree = linkage(z / np.linalg.norm(z, axis=1, keepdims=True), "average", metric="cosine")
    ari, cut = _best_cut(tree, y, 41)
    assert ari == 1.0
    assert _climbed_ari(tree, y, cut, 4) == 1.0  # up to one class's size: nothing to join
    assert _climbed_ari(tree, y, cut, 8) < 0.8  # up to two: the look-alikes are joined
    assert _climbed_ari(tree, y, cut, None) == -1.0  # not on offer
