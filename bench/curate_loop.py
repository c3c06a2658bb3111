"""The learning loop's side of ``bench/curate.py``: the same curator, with the loop's suggestions on offer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


#: The issue's goals with the loop: actions to label 95% at >= 97% precision.
LOOP_GOAL = {"fashion_mnist": 250, "coil100_subset": 120, "mnist_test": 80, "orl_faces": 50, "orl_faces_dlib": 50, "coil20": 39}


def curator_figures(cur: Any) -> dict:
    """One simulated run's figures: actions to 90/95/99% with the precision there, and how."""
    return {
        "at_90": cur.at(0.90),
        "at_95": cur.at(0.95),
        "at_99": cur.at(0.99),
        "final": {"actions": cur.actions, "coverage": round(cur.curve[-1][1], 4), "precision": round(cur.curve[-1][2], 4)},
        "actions_by_kind": dict(cur.by_kind),
        "wrong_named_members": cur.wrong_members,
        "curators": cur.store.curator_stats(),
    }


def run_loop(ws: Path, truth: dict[str, str], *, spare_cost: float, tolerance: float, goal: int | None) -> dict:
    """The same curator, the same pace model, with the learning loop's suggested groups on offer."""
    from bench.curate import Curator

    t0 = time.perf_counter()
    cur = Curator(ws, truth, spare_cost=spare_cost, tolerance=tolerance, loop=True)
    cur.run()
    res = curator_figures(cur)
    a95 = res["at_95"]
    res["goal"] = {
        "rule": f">=95% labelled at >=97% precision within {goal} actions" if goal else ">=95% labelled at >=97% precision",
        "met": bool(goal and a95["actions"] is not None and a95["actions"] <= goal and a95["precision"] >= 0.97),
    }
    res["rounds"] = len(cur.rounds)
    res["learn_s"] = round(sum(r["seconds"] for r in cur.rounds), 1)
    res["simulate_s"] = round(time.perf_counter() - t0, 1)
    # Does the model's estimate of its accuracy on what is left hold? (mean absolute gap over rounds)
    gaps = [abs(r["estimated_accuracy_left"] - r["realised_accuracy_left"]) for r in cur.rounds if r["estimated_accuracy_left"] is not None]
    res["estimate_gap_mean"] = round(float(np.mean(gaps)), 4) if gaps else None
    prec = [r["suggested_precision"] for r in cur.rounds if r["suggested_precision"] is not None]
    res["suggested_precision_min"] = min(prec) if prec else None
    res["round_log"] = cur.rounds[:: max(1, len(cur.rounds) // 20)]
    res["curve"] = cur.curve
    cur.store.close()
    return res
