"""A small real recognition setup shared by the pipeline and API tests (one per test session).

Generated object images (tests/generated.py) embedded with the default pretrained model: four
objects are labelled (12 poses each, 30 degrees apart), three poses in between are kept back as
known queries, and a fifth object is never labelled (its images should come back "unknown"). The
objects are named like COIL-100's (``obj001`` ...); recognition quality on the real evaluation
sets is measured by the benchmarks, not here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

KNOWN = ("obj001", "obj004", "obj007", "obj010")
UNKNOWN = "obj013"
#: the generated object each name stands for
SOURCE = {"obj001": "obj01", "obj004": "obj02", "obj007": "obj03", "obj010": "obj04", "obj013": "obj05"}


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
    from tests.generated import generated_data

    root = tmp_path_factory.mktemp("recog-pool")
    for name, obj in SOURCE.items():
        shutil.copytree(generated_data("images", obj), root / name)
    src = tmp_path_factory.mktemp("recog-src")
    labelled, queries = {}, {}
    for cls in KNOWN:
        imgs = _images(root, cls)
        labelled[cls], queries[cls] = imgs[0:36:3], imgs[4:36:12]  # 12 poses 30 degrees apart; 3 in between
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
