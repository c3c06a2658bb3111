"""Detector crops in the viewer: a crop's thumbnail shows the crop; opening it shows the parent
image with the box drawn. Crops come from a real detect + embed run on an ORL group photo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from corral.api.errors import NotFound
from corral.api.itemindex import ItemIndex
from corral.api.thumbs import ThumbCache
from corral.pipeline.embed import EmbedConfig, embed
from corral.storage.crops import split_crop_uri
from corral.storage.workspace import Workspace
from tests.conftest import shared_data
from bench.groups import compose, orl_photos


@pytest.fixture(scope="module")
def crop_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("cropviews")
    photos = orl_photos(shared_data("orl_faces", "images"), people=2, photos=range(2, 3), seed=11)
    compose(root / "src", photos, per_image=2, size=(500, 320), scale=(1.7, 1.7), seed=11, prefix="pair")
    embed(str(root / "src"), workspace=root / "ws", config=EmbedConfig(detector="face", model="dlib:face-resnet", progress=False))
    ws = Workspace(root / "ws")
    return ws, ws.items().to_pylist()


def test_crop_thumbnail_is_the_box_and_the_large_view_is_the_parent_with_the_box(crop_ws):
    ws, items = crop_ws
    crops = [r for r in items if r["parent_id"]]
    parent = next(r for r in items if not r["parent_id"])
    assert len(crops) == 2
    cache = ThumbCache(ws, ItemIndex(ws))
    for c in crops:
        x, y, w, h = json.loads(c["bbox"])
        assert split_crop_uri(c["uri"]) == (parent["uri"], (x, y, w, h))
        thumb = Image.open(cache.thumb(c["id"], 64))
        assert max(thumb.size) == 64 and abs(thumb.size[0] / thumb.size[1] - w / h) < 0.25  # the face, not the wide photo
        view = np.asarray(Image.open(cache.crop_view(c["id"])).convert("RGB")).astype(int)
        assert view.shape[:2] == (parent["height"], parent["width"])
        box_colour = np.array([255, 196, 0])
        assert np.abs(view[y + h // 2, x] - box_colour).sum() < 90  # the box's left edge is drawn
        assert np.abs(view[y + 1, x + w // 2] - box_colour).sum() < 90  # and its top
    # Whole images keep their usual views; unknown ids are a 404, not a traceback.
    assert cache.crop_view(parent["id"]) is None
    assert max(Image.open(cache.thumb(parent["id"], 64)).size) == 64
    with pytest.raises(NotFound):
        cache.crop_view("0" * 32)
