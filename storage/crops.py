"""Crop items (cut from a parent image by a detector) as the workspace records them.

A crop's row in the items tables has ``parent_id`` (the parent image's item id), ``bbox``
(``[x, y, w, h]`` in the parent's pixels, as JSON) and a ``uri`` that is the parent's uri with a
media fragment naming the box, ``<parent uri>#xywh=x,y,w,h``. The parent image stays an item of
its own. Labels on crops roll up: a parent image's labels are the labels of its crops
(:func:`rolled_up_labels`).

This module reads plain tables and imports none of Corral's other packages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

logger = logging.getLogger(__name__)

FRAGMENT = "#xywh="


def split_crop_uri(uri: str | None) -> tuple[str, tuple[float, float, float, float]] | None:
    """``(parent uri, (x, y, w, h))`` for a crop's uri; None for a whole image's (or a malformed fragment)."""
    if not uri or FRAGMENT not in uri:
        return None
    base, _, frag = uri.rpartition(FRAGMENT)
    try:
        x, y, w, h = (float(v) for v in frag.split(","))
    except ValueError:
        return None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        return None
    return base, (x, y, w, h)


def parse_bbox(text: Any) -> list[float] | None:
    """A ``bbox`` cell (JSON ``[x, y, w, h]``) as four numbers; None when empty or malformed."""
    if not text:
        return None
    try:
        box = json.loads(text) if isinstance(text, str) else list(text)
        vals = [float(v) for v in box]
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == 4 else None


def rolled_up_labels(items: pa.Table, item_labels: Mapping[str, str]) -> dict[str, list[str]]:
    """Each item's labels, sorted: its own label plus, for a parent image, its crops' labels.

    Args:
        items: an items table (``id``, ``parent_id`` columns), e.g. ``Workspace.items()``.
        item_labels: item id -> its current label (unlabelled items absent).
    """
    out: dict[str, set[str]] = {}
    ids = items.column("id").to_pylist() if items.num_rows else []
    parents = items.column("parent_id").to_pylist() if items.num_rows and "parent_id" in items.column_names else [""] * len(ids)
    for item_id, parent in zip(ids, parents):
        label = item_labels.get(item_id)
        if label is None:
            continue
        out.setdefault(item_id, set()).add(label)
        if parent:
            out.setdefault(parent, set()).add(label)
    return {k: sorted(v) for k, v in out.items()}
