"""Which rule should choose the map's HDBSCAN cut? Candidate rules scored the honest way.

Every rule gets the same input ``build_map`` gives the cut: the 10-D clustering layout, umap-learn's
fuzzy graph and the embeddings (prepared once per collection by ``bench/map_cut_data.py``, cached
under ``bench/out/map_cut``). Its cut is scored by ARI against the true classes after noise is
handed to the nearest cluster, as the map does.

* **Leave-one-set-out** over the labelled sets: for each set, a rule's parameters are the ones
  with the best mean ARI on the *other* labelled sets; the set is scored with those. The
  in-sample figure (parameters chosen with the set included) stands next to it.
* **Generated** collections of known structure (class counts 5 to 500, skewed sizes, pose-sweep
  curves, near twins) are never used to choose anything: each rule runs with the parameters
  chosen on all labelled sets. Their in-sample best is shown for reference.
* **The floor**: ``hdbscan.HDBSCAN().fit_predict(umap.UMAP().fit_transform(x))`` at every default
  on the same vectors (noise stays -1, as its user would see it).

    python bench/map_cut.py --out bench/results/map_cut.json
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import emit_result, peak_rss_mib  # noqa: E402
from corral.pipeline.device import cpu_count  # noqa: E402
from bench.map_cut_data import LABELLED, cluster_space, generated, labelled, log, plain  # noqa: E402

#: A held-out set counts as "worse than the floor" when its ARI is this far below plain's.
MARGIN = 0.05


class Cuts:
    """Every cut of one collection's HDBSCAN trees, computed on demand and remembered."""

    def __init__(self, coords: np.ndarray, graph: Any, vectors: np.ndarray) -> None:
        self.x = np.ascontiguousarray(coords, np.float64)
        self.graph = graph
        self.vectors = vectors
        self.n = self.x.shape[0]
        self._links: dict[int, np.ndarray] = {}
        self._cuts: dict[tuple, tuple[np.ndarray, float]] = {}
        self._final: dict[tuple, np.ndarray] = {}

    def linkage(self, ms: int) -> np.ndarray:
        from fast_hdbscan.hdbscan import compute_minimum_spanning_tree

        from corral.pipeline.cluster import linkage_of

        if ms not in self._links:
            mst, _, _ = compute_minimum_spanning_tree(self.x, min_samples=min(ms, self.n - 1))
            self._links[ms] = linkage_of(mst)
        return self._links[ms]

    def cut(self, ms: int, method: str, mcs: int) -> tuple[np.ndarray, float]:
        """Raw labels (-1 noise) and the mean per-item stability of the selected clusters."""
        from fast_hdbscan.cluster_trees import score_condensed_tree_nodes

        from corral.pipeline.cluster import cut_linkage

        mcs = int(min(max(mcs, 2), self.n))
        key = (ms, method, mcs)
        if key not in self._cuts:
            labels, _, tree = cut_linkage(self.linkage(ms), self.n, min_cluster_size=mcs, method=method)
            stab = 0.0
            if labels.max() >= 0 and len(tree.parent):
                scores = score_condensed_tree_nodes(tree)
                stab = float(sum(scores.values())) / self.n
            self._cuts[key] = (labels, stab)
        return self._cuts[key]

    def final(self, ms: int, method: str, mcs: int) -> np.ndarray:
        """The cut as the map shows it: noise handed to the nearest cluster; no cluster: one group."""
        from corral.pipeline.cluster import nearest_cluster

        key = (ms, method, int(mcs))
        if key not in self._final:
            labels = self.cut(ms, method, mcs)[0]
            if labels.max() < 0:
                labels = np.zeros(self.n, np.int64)
            self._final[key] = nearest_cluster(self.x, labels)[0]
        return self._final[key]


# --------------------------------------------------------------------------------------------
# Candidate rules: each maps (cuts, params) to final labels.


def size_of(n: int, a: float) -> int:
    return max(5, int(round(a * np.sqrt(n))))


def rule_today(c: Cuts, _: dict) -> np.ndarray:
    from corral.pipeline.cluster import HdbscanParams, cluster_points

    return cluster_points(c.x, params=HdbscanParams(), graph=c.graph, vectors=c.vectors).labels


def rule_modularity(c: Cuts, _: dict) -> np.ndarray:
    from corral.pipeline.cluster import HdbscanParams, cluster_points

    return cluster_points(c.x, params=HdbscanParams(), graph=c.graph, vectors=None).labels


def rule_fixed(c: Cuts, p: dict) -> np.ndarray:
    return c.final(p["ms"], p["method"], p["mcs"])


def rule_sqrt(c: Cuts, p: dict) -> np.ndarray:
    return c.final(p["ms"], p["method"], size_of(c.n, p["a"]))


def _grid(n: int) -> list[int]:
    from corral.pipeline.cutselect import candidate_sizes

    return candidate_sizes(n, 20)


def rule_plateau(c: Cuts, p: dict) -> np.ndarray:
    """The cluster count that holds over the longest run of min_cluster_size (eom): the most
    persistent partition across scales. Ties go to the finer run."""
    sizes = _grid(c.n)
    counts = [int(c.cut(p["ms"], "eom", s)[0].max()) + 1 for s in sizes]
    best, run, start = (0, 0), 1, 0
    for i in range(1, len(sizes) + 1):
        if i < len(sizes) and counts[i] == counts[i - 1]:
            run += 1
            continue
        if counts[start] > 1 and (run, -start) > (best[0], -best[1]):
            best = (run, start)
        run, start = 1, i
    return c.final(p["ms"], "eom", sizes[best[1]])


def rule_stability(c: Cuts, p: dict) -> np.ndarray:
    """The eom cut whose selected clusters hold the most stability per item."""
    sizes = _grid(c.n)
    scored = [(c.cut(p["ms"], "eom", s)[1], -s) for s in sizes]
    return c.final(p["ms"], "eom", -max(scored)[1])


def rule_guarded(c: Cuts, p: dict) -> np.ndarray:
    """Today's choice, but never more clusters than eom at the size rule gives."""
    today = rule_today(c, p)
    floor = c.final(p["ms"], "eom", size_of(c.n, p["a"]))
    return floor if today.max() > floor.max() else today


def rule_silhouette_sqrt(c: Cuts, p: dict) -> np.ndarray:
    """The silhouette of the embeddings chooses among eom cuts at a few size-rule sizes."""
    from corral.pipeline.cutselect import silhouette_judge

    judge = c.__dict__.setdefault("_judge", silhouette_judge(c.vectors))
    opts = [size_of(c.n, a) for a in (0.1, 0.2, 0.4, 0.8)]
    scored = [(judge(c.final(p["ms"], "eom", s)), s) for s in opts]
    return c.final(p["ms"], "eom", max(scored)[1])


A_VALUES = (0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.2)
RULES: dict[str, tuple[Callable[[Cuts, dict], np.ndarray], list[dict]]] = {
    "today": (rule_today, [{}]),
    "modularity_only": (rule_modularity, [{}]),
    "eom_fixed": (rule_fixed, [{"ms": ms, "method": "eom", "mcs": s} for ms in (5, 10) for s in (5, 8, 10, 15, 20, 30, 50)]),
    "leaf_fixed": (rule_fixed, [{"ms": ms, "method": "leaf", "mcs": s} for ms in (5, 10) for s in (5, 8, 10, 15, 20, 30, 50)]),
    "eom_sqrt": (rule_sqrt, [{"ms": ms, "method": "eom", "a": a} for ms in (5, 10) for a in A_VALUES]),
    "leaf_sqrt": (rule_sqrt, [{"ms": ms, "method": "leaf", "a": a} for ms in (5, 10) for a in A_VALUES]),
    "plateau": (rule_plateau, [{"ms": ms} for ms in (5, 10)]),
    "stability": (rule_stability, [{"ms": ms} for ms in (5, 10)]),
    "today_guarded": (rule_guarded, [{"ms": ms, "a": a} for ms in (5, 10) for a in A_VALUES]),
    "silhouette_sqrt": (rule_silhouette_sqrt, [{"ms": ms} for ms in (5, 10)]),
}


def key_of(p: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in p.items()) or "-"


# --------------------------------------------------------------------------------------------


def evaluate(name: str, x: np.ndarray, y: np.ndarray, rules: list[str]) -> dict[str, Any]:
    """ARI and cluster count of every rule and setting on one collection, and of the floor."""
    from sklearn.metrics import adjusted_rand_score

    from corral.pipeline.evaluate import cluster_scores

    def per_item(lab: np.ndarray) -> float:
        """Estimated curator actions per item (corral evaluate's rule: noise items count alone)."""
        return round(float(cluster_scores(lab, y)["actions_per_item"]), 4)

    space = cluster_space(name, x)
    base = plain(name, x)
    cuts = Cuts(space["coords"], space["graph"], x)
    out: dict[str, Any] = {
        "n": int(x.shape[0]),
        "classes": int(len(np.unique(y))),
        "plain": {
            "ari": round(float(adjusted_rand_score(y, base["labels"])), 4),
            "clusters": int(base["labels"].max()) + 1,
            "noise": round(float(np.mean(base["labels"] < 0)), 4),
            "actions_per_item": per_item(base["labels"]),
        },
        "rules": {},
    }
    t0 = time.perf_counter()
    for r in rules:
        fn, grid = RULES[r]
        out["rules"][r] = {}
        for p in grid:
            lab = fn(cuts, p)
            out["rules"][r][key_of(p)] = {"ari": round(float(adjusted_rand_score(y, lab)), 4), "clusters": int(lab.max()) + 1, "actions_per_item": per_item(lab)}
    log(
        f"{name}: n={x.shape[0]} classes={out['classes']} plain ARI {out['plain']['ari']} ({out['plain']['clusters']} clusters), "
        f"rules {time.perf_counter() - t0:.0f} s; today {out['rules'].get('today', {}).get('-')}"
    )
    return out


def best_setting(per_set: dict[str, Any], rule: str, sets: list[str]) -> str:
    """The setting of ``rule`` with the best mean ARI over ``sets`` (ties: the first listed)."""
    keys = list(per_set[sets[0]]["rules"][rule])
    return max(keys, key=lambda k: np.mean([per_set[s]["rules"][rule][k]["ari"] for s in sets]))


def loso(per_set: dict[str, Any], rules: list[str], train: list[str], test_gen: list[str]) -> dict[str, Any]:
    """Leave-one-set-out over ``train`` and out-of-sample figures on ``test_gen``, per rule."""
    table: dict[str, Any] = {}
    for r in rules:
        rows: dict[str, Any] = {}
        for s in train:
            others = [o for o in train if o != s]
            k_out, k_in = best_setting(per_set, r, others), best_setting(per_set, r, train)
            k_own = best_setting(per_set, r, [s])
            e = per_set[s]["rules"][r]
            rows[s] = {
                "setting": k_out,
                "ari": e[k_out]["ari"],
                "clusters": e[k_out]["clusters"],
                "in_sample_ari": e[k_in]["ari"],
                "own_best_ari": e[k_own]["ari"],
                "plain_ari": per_set[s]["plain"]["ari"],
                "actions_per_item": e[k_out]["actions_per_item"],
                "plain_actions_per_item": per_set[s]["plain"]["actions_per_item"],
            }
        k_all = best_setting(per_set, r, train)
        gen = {}
        for s in test_gen:
            e = per_set[s]["rules"][r]
            k_own = best_setting(per_set, r, [s])
            gen[s] = {
                "setting": k_all,
                "ari": e[k_all]["ari"],
                "clusters": e[k_all]["clusters"],
                "own_best_ari": e[k_own]["ari"],
                "plain_ari": per_set[s]["plain"]["ari"],
                "classes": per_set[s]["classes"],
                "actions_per_item": e[k_all]["actions_per_item"],
                "plain_actions_per_item": per_set[s]["plain"]["actions_per_item"],
            }
        summary = {
            "setting_on_all_labelled": k_all,
            "loso_mean_ari": round(float(np.mean([v["ari"] for v in rows.values()])), 4),
            "in_sample_mean_ari": round(float(np.mean([v["in_sample_ari"] for v in rows.values()])), 4),
            "generated_mean_ari": round(float(np.mean([v["ari"] for v in gen.values()])), 4) if gen else None,
            "worst_vs_plain_loso": round(min(v["ari"] - v["plain_ari"] for v in rows.values()), 4),
            "worst_vs_plain_generated": round(min(v["ari"] - v["plain_ari"] for v in gen.values()), 4) if gen else None,
        }
        # the cheap stand-in for a curator's actions (corral evaluate's estimate), held-out settings
        summary["loso_mean_actions_per_item"] = round(float(np.mean([v["actions_per_item"] for v in rows.values()])), 4)
        summary["plain_mean_actions_per_item_labelled"] = round(float(np.mean([v["plain_actions_per_item"] for v in rows.values()])), 4)
        summary["sets_costlier_than_plain"] = [s for s, v in {**rows, **gen}.items() if v["actions_per_item"] > v["plain_actions_per_item"]]
        summary["sets_worse_than_plain"] = [s for s, v in {**rows, **gen}.items() if v["ari"] < v["plain_ari"] - MARGIN]
        table[r] = {"summary": summary, "loso": rows, "generated": gen}
    return table


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labelled", default=",".join(LABELLED), help="labelled sets for leave-one-set-out")
    p.add_argument("--generated", default="all", help="generated sets (comma-separated, 'all' or 'none')")
    p.add_argument("--rules", default=",".join(RULES), help="candidate rules to score")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    rules = [r for r in args.rules.split(",") if r]
    for r in rules:
        if r not in RULES:
            p.error(f"--rules {r!r}: expected some of {', '.join(RULES)}")
    gens = generated()
    train = [s for s in args.labelled.split(",") if s]
    test_gen = list(gens) if args.generated == "all" else [] if args.generated == "none" else args.generated.split(",")
    per_set: dict[str, Any] = {}
    t0 = time.perf_counter()
    for s in train:
        x, y = labelled(s)
        per_set[s] = evaluate(s, x, y, rules)
    for s in test_gen:
        x, y = gens[s]
        per_set[s] = evaluate(s, x, y, rules)
    table = loso(per_set, rules, train, test_gen)
    result = {
        "benchmark": "map_cut",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "device": {"kind": "cpu", "cpus": cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "margin": MARGIN,
        "summary": {r: table[r]["summary"] for r in rules},
        "rules": table,
        "per_set": per_set,
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": peak_rss_mib(),
    }
    emit_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
