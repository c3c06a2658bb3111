"""Pre-labelling with the model the curation loop learns (``corral suggest``, the default).

The loop (:mod:`corral.pipeline.learn`) fits a light model on the map's vectors from every label so
far and gives each unlabelled item a predicted label and a calibrated confidence (out-of-fold, on
group-wise folds, lowered for items far from every labelled one, which may belong to a label
nobody has named). Pre-labelling a new collection placed on the map (``corral map --update``)
keeps the items whose confidence reaches the loop's own bar for a suggested group: the precision
it aims for (0.97 by default), raised as the held-out accuracy falls. The result is the same
suggestions table the recognition index writes (:mod:`corral.storage.suggestions`), so the viewer's
review of suggestions, accepting (``assign``) and rejecting (``exclude``), is unchanged.

Measured against the index's pre-labelling threshold on the same labels (``bench/suggest.py``):
see ``docs/learn.md``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from corral.pipeline.learn import LearnConfig, learn
from corral.pipeline.loop import map_vectors, regroup_rest, store_labels
from corral.storage.index import MANIFEST
from corral.storage.suggestions import SuggestResult, candidates, write_suggestions
from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)


def suggest_learnt(
    *,
    workspace: str | os.PathLike[str] | Workspace,
    map_name: str | None = None,
    min_confidence: float | None = None,
    include_all: bool = False,
    config: LearnConfig | None = None,
    gate: bool = True,
) -> SuggestResult:
    """Propose labels for the map's new (or, with ``include_all``, every) unlabelled items.

    Args:
        workspace: the workspace with a map and labels.
        map_name: the map (default: the newest).
        min_confidence: the calibrated confidence a suggestion needs (default: the loop's bar).
        include_all: consider every unlabelled point, not only those ``corral map --update`` placed.
        config: the loop's settings.
        gate: keep only items the labels' regrouping finds among items of the label the model
            predicts (the loop's known/new gate, :func:`corral.pipeline.loop.regroup_rest`): an item
            in a group with no labelled item is most likely of a label nobody has named.

    Raises :class:`~corral.pipeline.learn.LearnError` when the labels cannot teach a model yet, or
    (with ``gate``) are too few for the gate to tell labels nobody has named from the named ones.
    """
    from corral.storage.labels import LabelStore

    if min_confidence is not None and not 0 < min_confidence <= 1:
        raise ValueError(f"min_confidence={min_confidence!r}: expected a confidence in (0, 1]")
    t0 = time.perf_counter()
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    mv = map_vectors(ws, map_name)
    pending = candidates(ws, mv.map_name, include_all=include_all)
    store = LabelStore.open(ws)
    try:
        version, labels, excl = store_labels(store, mv.ids)
    finally:
        store.close()
    res = learn(vectors=mv.vectors, labels=labels, exclusions=excl, config=config)
    bar = float(min_confidence) if min_confidence is not None else float(res.bar)
    continues = None
    if gate:
        rg = regroup_rest(res)
        if rg is not None:
            continues = rg.continues
        elif res.undecided:
            # As the Learn panel: with fewer labels than the gate needs, a class nobody named cannot
            # be told from a named one, so the model's sure answers are not evidence yet.
            from corral.pipeline.learn import LearnError
            from corral.pipeline.regroup import RegroupConfig

            raise LearnError(
                f"the loop tells labels nobody has named from the named ones once {RegroupConfig().min_labels} labels have "
                f"{res.config.min_per_label} or more items each; it has {len(res.classes)} ({', '.join(res.classes)}). Name a few more clusters first."
            )
    row_of = {i: k for k, i in enumerate(mv.ids.tolist())}
    rows: dict[str, list] = {"id": [], "label": [], "score": [], "margin": [], "top": []}
    gated = 0
    for item in pending.ids:
        r = row_of.get(item)
        if r is None or res.labelled[r]:
            continue
        label = res.classes[int(res.predicted[r])]
        conf = float(res.confidence[r])
        if conf < bar or label in pending.excluded.get(item, ()):
            continue
        if continues is not None and continues[r] != res.predicted[r]:
            gated += 1
            continue
        best = np.argsort(-res.proba[r])[:3]
        rows["id"].append(item)
        rows["label"].append(label)
        rows["score"].append(conf)
        rows["margin"].append(conf - bar)
        rows["top"].append(json.dumps([[res.classes[int(c)], round(float(res.proba[r, c]), 4)] for c in best if res.proba[r, c] > 0]))
    extra = {
        "using": "learnt model",
        "model": res.model,
        "heldout_accuracy": round(res.heldout_accuracy, 4),
        "model_labels_version": version,
        # sure enough, but found among no item of the label (None: no gate, or nothing left to regroup)
        "held_back_as_new": gated if continues is not None else None,
    }
    return write_suggestions(ws, mv.map_name, rows, threshold=bar, pending=pending, extra=extra, t0=t0)


def suggest_any(
    *, workspace: str | os.PathLike[str] | Workspace, map_name: str | None = None, using: str = "learnt", threshold: float | None = None, include_all: bool = False
) -> tuple[SuggestResult, str | None]:
    """``corral suggest``: the learnt model (``using="learnt"``) or the index (``"index"``).

    With ``"learnt"`` and too few labels to learn from, the index answers when the workspace has
    one; the second value then says why. ``threshold`` is a confidence for the model, a margin for
    the index.
    """
    from corral.pipeline.learn import LearnError
    from corral.storage.suggestions import suggest

    if using not in ("learnt", "index"):
        raise ValueError(f"using={using!r}: expected learnt or index")
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if using == "learnt":
        try:
            return suggest_learnt(workspace=ws, map_name=map_name, min_confidence=threshold, include_all=include_all), None
        except LearnError as e:
            if not Path(ws.index_dir, MANIFEST).is_file():
                raise
            note = f"{e} Using the recognition index instead."
            logger.info("%s", note)
            return suggest(workspace=ws, map_name=map_name, include_all=include_all), note
    return suggest(workspace=ws, map_name=map_name, min_margin=threshold, include_all=include_all), None
