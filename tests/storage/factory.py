"""Small real workspaces for the storage tests, built in code without running a model.

Items are real image files, usually the generated set (tests/generated.py; ids are their content hashes, as the embed stage
makes them); vectors are seeded random unit vectors in the on-disk embedding format; crops are
items with ``parent_id`` and ``bbox`` as the detect stage records them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from corral.storage.workspace import Workspace, atomic_write_json, atomic_write_table, embedding_table, items_table


#: Item ids of the label-store tests' plain store (the ``store`` fixture of tests/storage/conftest.py).
IDS = [f"item-{k:03d}" for k in range(40)]


def content_id(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def crop_id(parent_id: str, bbox: list[float]) -> str:
    return content_id(f"{parent_id}:{json.dumps(bbox)}".encode())


def pick_images(root: Path, *, classes: int, per_class: int) -> list[Path]:
    """The first ``per_class`` images of the first ``classes`` class folders, sorted."""
    out: list[Path] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir())[:classes]:
        out += sorted(folder.glob("*.png"))[:per_class]
    return out


def build_workspace(
    root: Path,
    images: list[Path],
    *,
    dim: int = 32,
    seed: int = 0,
    crops: list[tuple[int, list[float]]] = (),
    name: str = "test-model",
    shard_size: int = 10_000,
    extra_vectors: int = 0,
    manifest_labels: bool = False,
) -> Workspace:
    """A workspace whose one embedding set covers ``images`` (plus crops of some of them).

    ``extra_vectors`` appends that many more rows of vectors with synthetic ids to make the
    shards big (for multipart uploads). ``manifest_labels`` records each image's folder name as
    the label its manifest carried."""
    ws = Workspace(root).ensure()
    rows = []
    for p in images:
        data = p.read_bytes()
        with Image.open(p) as im:
            w, h = im.size
        rows.append(
            {
                "id": content_id(data),
                "uri": str(p.resolve()),
                "status": "ok",
                "width": w,
                "height": h,
                "bytes": len(data),
                "label": p.parent.name if manifest_labels else "",
            }
        )
    for parent_index, bbox in crops:
        parent = rows[parent_index]
        rows.append(
            {
                # a crop's uri names the box on its parent (a media fragment), so every crop has its own
                "id": crop_id(parent["id"], bbox),
                "uri": parent["uri"] + "#xywh=" + ",".join(f"{v:g}" for v in bbox),
                "status": "ok",
                "width": int(bbox[2]),
                "height": int(bbox[3]),
                "parent_id": parent["id"],
                "bbox": json.dumps(bbox),
            }
        )
    ids = [r["id"] for r in rows] + [f"synthetic-{k:07d}" for k in range(extra_vectors)]
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((len(ids), dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    es = ws.embedding_set(name)
    es.path.mkdir(parents=True, exist_ok=True)
    for n, start in enumerate(range(0, len(ids), shard_size)):
        emb_path, items_path = es.shard_paths(n)
        atomic_write_table(emb_path, embedding_table(ids[start : start + shard_size], vecs[start : start + shard_size]))
        atomic_write_table(items_path, items_table(rows[start : start + shard_size]))
    atomic_write_json(es.sidecar_path, {"model": f"timm:{name}", "dim": dim, "dtype": "float32", "count": len(ids), "weights_hash": "sha256:" + "0" * 64, "preprocessing": {}})
    return ws
