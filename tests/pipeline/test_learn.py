"""The learning loop on collections of known structure: calibrated, honest, and it says what it needs."""

from __future__ import annotations

import numpy as np
import pytest

from corral.pipeline.learn import Calibrator, LearnConfig, LearnError, group_folds, learn
from corral.pipeline.queues import hard_items, label_issues, near_duplicates


def blobs(classes: int = 8, per: int = 120, dim: int = 48, spread: float = 0.55, seed: int = 0):
    """Unit-norm vectors around ``classes`` random centres; neighbouring classes overlap a little."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y = np.repeat(np.arange(classes), per)
    x = centres[y] + spread * rng.normal(size=(len(y), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y


def first_labels(y: np.ndarray, per_class: int, seed: int = 0) -> list[str | None]:
    rng = np.random.default_rng(seed)
    out: list[str | None] = [None] * len(y)
    for c in np.unique(y):
        for r in rng.choice(np.flatnonzero(y == c), per_class, replace=False):
            out[r] = f"class {c}"
    return out


def test_suggested_groups_are_as_precise_as_they_claim():
    x, y = blobs(spread=0.9)
    labels = first_labels(y, 10)
    res = learn(vectors=x, labels=labels, config=LearnConfig(aim=0.95))
    assert res.groups, "a model with 10 labels per class should suggest something"
    truth = np.array([f"class {c}" for c in y], dtype=object)
    right = sum(int((truth[g.rows] == g.label).sum()) for g in res.groups)
    total = sum(len(g.rows) for g in res.groups)
    assert right / total >= 0.95
    for g in res.groups:
        assert not res.labelled[g.rows].any()  # only unlabelled items are suggested
        assert (g.confidence >= res.bar).all() and np.all(np.diff(g.confidence) >= 0)  # least sure first
    # The calibrated confidence means what it says on the unlabelled rows (within a few points).
    free = ~res.labelled
    realised = float((np.array(res.classes, dtype=object)[res.predicted[free]] == truth[free]).mean())
    assert abs(res.estimated_accuracy_left - realised) < 0.06


def test_bar_starts_strict_and_relaxes_as_the_model_proves_itself():
    x, y = blobs(spread=2.0, seed=3)
    cfg = LearnConfig(aim=0.9)
    few = learn(vectors=x, labels=first_labels(y, 3), config=cfg)
    many = learn(vectors=x, labels=first_labels(y, 40), config=cfg)
    assert few.bar == pytest.approx(max(0.9, 1 - 0.1 * few.heldout_accuracy))
    assert many.heldout_accuracy >= few.heldout_accuracy
    assert many.bar <= few.bar
    share = [sum(len(g.rows) for g in r.groups) / (~r.labelled).sum() for r in (few, many)]
    assert share[1] > share[0] + 0.3  # three labels a class prove little: it proposes (almost) nothing yet


def test_exclusions_are_never_suggested_back():
    x, y = blobs()
    labels = first_labels(y, 10)
    first = learn(vectors=x, labels=labels)
    g = first.groups[0]
    excluded = {int(r): {g.label} for r in g.rows[:5]}
    again = learn(vectors=x, labels=labels, exclusions=excluded)
    for h in again.groups:
        if h.label == g.label:
            assert not set(h.rows.tolist()) & set(excluded)
    for r in excluded:
        assert again.classes[again.predicted[r]] != g.label


@pytest.mark.parametrize(
    "labels, needs",
    [
        ([None] * 50, "labels so far: none"),
        (["a"] * 10 + [None] * 40, "a (10)"),
        (["a", "b", "c"] + [None] * 47, "3 or more items each"),
    ],
)
def test_too_few_labels_says_what_it_needs(labels, needs):
    x, _ = blobs(classes=2, per=25)
    with pytest.raises(LearnError, match="at least 2 labels") as e:
        learn(vectors=x, labels=labels)
    assert needs in str(e.value)


def test_folds_hold_out_runs_of_neighbours_not_random_items():
    # Every item has a near-twin; a random split would put most twins on both sides.
    rng = np.random.default_rng(1)
    base, y = blobs(classes=4, per=40, seed=1)
    twins = base + 0.01 * rng.normal(size=base.shape).astype(np.float32)
    x = np.concatenate([base, twins])
    yy = np.concatenate([y, y])
    fold = group_folds(x, yy, folds=5, seed=0)
    same = np.mean(fold[: len(base)] == fold[len(base) :])
    assert same > 0.9  # random assignment would give about 0.2


def test_calibrator_shrinks_small_steps():
    cal = Calibrator.fit(np.array([0.2, 0.5, 0.9, 0.95, 0.99]), np.array([0, 1, 1, 1, 1]))
    assert cal(np.array([0.99]))[0] < 1.0  # four right answers do not prove certainty
    assert np.all(np.diff(cal(np.linspace(0, 1, 50))) >= 0)


def test_queues_find_flipped_labels_near_twins_and_boundary_items():
    x, y = blobs(classes=5, per=100, spread=0.45, seed=2)
    labels: list[str | None] = [f"class {c}" if k % 2 == 0 else None for k, c in enumerate(y)]
    flipped = [0, 10, 200, 302]
    for r in flipped:
        labels[r] = f"class {(y[r] + 1) % 5}"
    # Plant three exact-ish copies of one unlabelled item.
    x = np.concatenate([x, np.repeat(x[1:2], 3, 0) + 1e-4])
    labels += [None] * 3
    res = learn(vectors=x, labels=labels)
    issues = label_issues(res)
    found = {e.row for e in issues}
    assert set(flipped) <= found
    assert len(found) <= 3 * len(flipped)  # few false alarms on clean labels
    for e in issues:
        if e.row in flipped:
            assert e.label == f"class {y[e.row]}" and e.current == labels[e.row]
    dups = near_duplicates(res.knn)
    assert any({1, 500, 501, 502} <= set(d) for d in dups)
    hard = hard_items(res, limit=20)
    assert all(not res.labelled[e.row] for e in hard)
    p = np.sort(res.proba, axis=1)
    margin = p[:, -1] - p[:, -2]
    free = np.flatnonzero(~res.labelled)
    assert np.median(margin[[e.row for e in hard]]) < np.median(margin[free])


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="aim"):
        LearnConfig(aim=1.0)
    with pytest.raises(ValueError, match="model"):
        LearnConfig(model="forest")
    with pytest.raises(ValueError, match="folds"):
        LearnConfig(folds=1)


def sectors(per: int = 150, seed: int = 0):
    """Three classes on a circle, each in two opposite sectors (with noise in 14 more dimensions): no
    linear boundary separates a class from the others, as garments or handwriting bend around each other."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, 6 * per)
    y = (angle // (np.pi / 3)).astype(int) % 3
    x = np.concatenate([np.stack([np.cos(angle), np.sin(angle)], 1), 0.08 * rng.normal(size=(len(angle), 14))], 1)
    return x.astype(np.float32), y


def test_an_rbf_svm_learns_classes_no_line_separates_and_auto_picks_it_by_measurement():
    x, y = sectors()
    labels = first_labels(y, 40)
    truth = np.array([f"class {c}" for c in y], dtype=object)
    res = {m: learn(vectors=x, labels=labels, config=LearnConfig(model=m, aim=0.95)) for m in ("logreg", "svm", "auto")}
    free = ~res["svm"].labelled
    acc = {m: float((np.array(r.classes, dtype=object)[r.predicted[free]] == truth[free]).mean()) for m, r in res.items()}
    assert acc["logreg"] < 0.7 < 0.9 < acc["svm"]  # a line cannot, the kernel can
    suggested = {m: sum(len(g.rows) for g in r.groups) for m, r in res.items()}
    right = sum(int((truth[g.rows] == g.label).sum()) for g in res["svm"].groups)
    assert suggested["logreg"] == 0 and suggested["svm"] >= 20 and right / suggested["svm"] >= 0.95
    # auto chose by held-out log loss: the kernel, not the line
    assert res["auto"].model == "svm" and res["auto"].heldout_log_loss["svm"] < res["auto"].heldout_log_loss["logreg"]


def test_the_svm_sees_at_most_max_train_rows_per_fit():
    x, y = blobs(classes=4, per=200)
    res = learn(vectors=x, labels=first_labels(y, 150), config=LearnConfig(model="svm", max_train=100))
    assert res.model == "svm" and res.heldout_accuracy > 0.8
    with pytest.raises(ValueError, match="max_train"):
        LearnConfig(max_train=5)


def test_likely_pages_reach_past_the_bar_and_the_gate_and_rank_the_right_items_first():
    """Overlapping classes: few items clear the bar (here none), so the suggested groups hold little of what is
    left. A review page per label takes the model's likeliest items for it instead (the curator
    checks every tile): at most a page each, never a labelled or suggested row, least sure first,
    the pages the model expects most right first, and far more right than the rest of the label's
    predicted items."""
    from corral.pipeline.learn import PAGE_SIZE, likely_pages
    from corral.pipeline.loop import regroup_rest

    x, y = blobs(classes=6, per=150, spread=2.5, seed=2)
    labels = first_labels(y, 40)
    res = learn(vectors=x, labels=labels)
    regroup_rest(res)  # the gate, as the loop runs it
    truth = np.array([f"class {c}" for c in y], dtype=object)
    suggested = {int(r) for g in res.groups for r in g.rows}
    free = ~res.labelled
    assert len(suggested) < 0.5 * free.sum()  # the bar and the gate leave most of the rest
    pages = likely_pages(res)
    assert pages and len({p.label for p in pages}) == len(pages)
    expected = [float(p.confidence.sum()) for p in pages]
    assert expected == sorted(expected, reverse=True)
    page_right, rest_right = [], []
    for p in pages:
        assert 3 <= len(p.rows) <= PAGE_SIZE and np.all(np.diff(p.confidence) >= 0)  # least sure first
        assert not res.labelled[p.rows].any() and not suggested & set(p.rows.tolist())
        k = res.classes.index(p.label)
        assert (res.predicted[p.rows] == k).all()
        rest = np.setdiff1d(np.flatnonzero(free & (res.predicted == k)), np.concatenate([p.rows, np.fromiter(suggested, int, len(suggested))]))
        page_right.append((truth[p.rows] == p.label).mean())
        if len(rest):
            rest_right.append((truth[rest] == p.label).mean())
    assert np.mean(page_right) >= 0.9 and np.mean(page_right) > np.mean(rest_right) + 0.05, (page_right, rest_right)


def test_proposals_passed_over_come_last():
    """A proposal the curator passed over (most of its items in one passed over before) goes after
    the others, in their order; the model's suggested groups stay where they are."""
    from corral.pipeline.loop import next_groups, passed_last

    cluster = np.array([0] * 6 + [1] * 5 + [2] * 4 + [-1] * 2)
    labelled = np.zeros(len(cluster), bool)
    regrouped = [np.array([0, 1, 2, 3, 4]), np.array([6, 7, 8])]
    entries = next_groups(cluster, labelled, [np.array([15, 16])], ["mug"], regrouped=regrouped)
    assert [e["kind"] for e in entries] == ["suggested", "group", "group", "cluster", "cluster", "cluster"]
    assert passed_last(entries, []) == entries
    # the first group, made anew with one more item (4 of its 5 passed over before): last
    out = passed_last(entries, [np.array([0, 1, 2, 3, 9])])
    assert [e["kind"] for e in out] == ["suggested", "group", "cluster", "cluster", "cluster", "group"]
    assert out[-1]["rows"].tolist() == [0, 1, 2, 3, 4]
    # 4 of cluster 0's 6 is less than 0.8 of it: it stays; a passed suggested group stays too
    out = passed_last(entries, [np.array([0, 1, 2, 3]), np.array([15, 16])])
    assert [(e["kind"], int(e["rows"][0])) for e in out] == [("suggested", 15), ("group", 6), ("cluster", 0), ("cluster", 6), ("cluster", 11), ("group", 0)]
    # several passed over keep their own order at the end
    out = passed_last(entries, [np.arange(6), np.array([6, 7, 8])])
    assert [(e["kind"], int(e["rows"][0])) for e in out] == [("suggested", 15), ("cluster", 6), ("cluster", 11), ("group", 0), ("group", 6), ("cluster", 0)]
