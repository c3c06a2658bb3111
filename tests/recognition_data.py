"""A small real recognition setup shared by the pipeline and API tests (one per test session).

Real COIL-100 images embedded with the default pretrained model: four objects are labelled
(their first six poses each), two more poses of each are kept back as known queries, and a fifth
object is never labelled (its images should come back "unknown").
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

KNOWN = ("obj001", "obj004", "obj007", "obj010")
UNKNOWN = "obj013"


@dataclass
class RecognitionSetup:
    workspace: Path
    labelled: dict[str, list[Path]]  # label -> images the index was built from
    queries: dict[str, list[Path]]  # label -> held-back images of that label
    unknown: list[Path]  # images of an object that has no label


def _images(root: Path, cls: str) -> list[Path]:
    return sorted((root / cls).glob("*.png"), key=lambda p: int(p.stem.split("__")[1]))


@pytest.fixture(scope="session")
def recognition_setup(tmp_path_factory) -> RecognitionSetup:
    from corral.pipeline.embed import EmbedConfig, embed
    from corral.storage.index_build import build_index
    from corral.storage.labels import LabelStore
    from corral.storage.workspace import Workspace
    from tests.conftest import shared_data

    root = shared_data("coil100_subset", "images")
    src = tmp_path_factory.mktemp("recog-src")
    labelled, queries = {}, {}
    for cls in KNOWN:
        imgs = _images(root, cls)
        labelled[cls], queries[cls] = imgs[0:12:2], imgs[1:12:4]  # 6 poses 40 degrees apart; 3 in between
    unknown = _images(root, UNKNOWN)[:4]
    for p in [p for v in labelled.values() for p in v]:
        (src / p.parent.name).mkdir(exist_ok=True)
        shutil.copy(p, src / p.parent.name / p.name)
    ws_root = tmp_path_factory.mktemp("recog-ws")
    embed(str(src), workspace=ws_root, config=EmbedConfig(progress=False, num_workers=0))
    ws = Workspace(ws_root)
    items = ws.items()
    store = LabelStore.open(ws)
    by_class: dict[str, list[str]] = {}
    for item_id, uri in zip(items.column("id").to_pylist(), items.column("uri").to_pylist()):
        by_class.setdefault(Path(uri).parent.name, []).append(item_id)
    for cls, ids in by_class.items():
        store.assign(ids, cls, user="curator")
    store.close()
    build_index(workspace=ws)
    return RecognitionSetup(ws_root, labelled, queries, unknown)
