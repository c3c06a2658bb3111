"""What naming one group costs in ``bench/curate.py``'s simulated curator: the plan of one naming
(the ids named, the tiles marked "not this", the tiles a cut leaves out, the actions), and the
rules for how many tiles to mark and where to cut the least-sure-first grid."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Plan:
    """What naming one group costs: the ids to name, the ids to exclude, and the actions."""

    label: str
    keep: list[str]
    exclude: list[str]  # marked one by one: stored as "not this label"
    actions: list[str] = field(default_factory=list)
    lost: int = 0  # right members excluded on the way (left for a later pass)
    # Cut off with "leave this one and every less sure out" (right and wrong alike): left unlabelled
    # with no verdict, as the viewer's cut does.
    skip: list[str] = field(default_factory=list)


def score(plans: list[Plan], spare_cost: float) -> float:
    return sum(len(pl.actions) + spare_cost * pl.lost for pl in plans)


def marks_needed(wrong: int, n: int, tolerance: float) -> int:
    """How many of ``wrong`` members among ``n`` to mark so that at most ``tolerance`` of what is
    left is wrong: the least ``m`` with ``wrong - m <= tolerance * (n - m)``."""
    m = 0 if wrong <= tolerance * n else int(np.ceil((wrong - tolerance * n) / (1 - tolerance)))
    return min(m, wrong)


def best_prefix(wrong: np.ndarray, spare_cost: float, tolerance: float = 0.0) -> tuple[int, int]:
    """Where to cut the panel, and how many wrong members to mark one by one after the cut.

    The first ``p`` (least sure) members go with one "leave this one and every less sure out"
    action; after it the curator marks wrong members until at most ``tolerance`` of what is left
    is wrong (the precision the team aims for). Minimises 1 action for the cut + the marks +
    ``spare_cost`` per right member given up in the cut (they stay unlabelled for a later pass).
    Returns ``(p, marks)``.
    """
    n = len(wrong)
    if n == 0 or not wrong.any():
        return 0, 0
    best = (float("inf"), 0, 0)
    wrong_after = np.concatenate([wrong[::-1].cumsum()[::-1], [0]])  # wrong members from position p on
    right_in = np.concatenate([[0], (~wrong).cumsum()])
    for p in range(n + 1):
        m = marks_needed(int(wrong_after[p]), n - p, tolerance)
        cost = (1 if p else 0) + m + spare_cost * right_in[p]
        if cost < best[0]:
            best = (cost, p, m)
    return best[1], best[2]
