"""Decoding awkward and hostile files: the right pixels, or a skip with the right reason."""

from __future__ import annotations

import numpy as np
import pytest

from corral.pipeline.decode import Preprocess, SkipItem, decode_for_model, open_image
from tests.pipeline.hostile import halves, jpeg_with_orientation, make_corpus

PRE = Preprocess(size=32, resize=36)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    good, bad = make_corpus(folder)
    return folder, good, bad


def test_good_files_decode_to_rgb(corpus):
    folder, good, _ = corpus
    for name, what in good.items():
        img = open_image((folder / name).read_bytes())
        assert img.mode == "RGB", (name, what, img.mode)
        arr, w, h = decode_for_model((folder / name).read_bytes(), PRE)
        assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8, name
        assert w > 0 and h > 0


def test_bad_files_are_skipped_with_reason(corpus):
    folder, _, bad = corpus
    for name, reason in bad.items():
        if reason == "unreadable":
            continue  # a path that cannot be read never reaches the decoder (see test_embed)
        with pytest.raises(SkipItem) as exc:
            open_image((folder / name).read_bytes())
        assert exc.value.reason == reason, (name, exc.value)


def test_exif_rotation_is_applied():
    data = jpeg_with_orientation(halves((80, 40)), 6)  # stored landscape, rotate 90 clockwise
    img = open_image(data)
    assert img.size == (40, 80)
    arr = np.asarray(img).astype(int)
    top, bottom = arr[5, 20], arr[75, 20]
    # The left (red) half ends up on top after a clockwise rotation.
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    _, w, h = decode_for_model(data, PRE)
    assert (w, h) == (40, 80)


def test_sixteen_bit_keeps_its_range(corpus):
    folder, _, _ = corpus
    arr = np.asarray(open_image((folder / "deep16.png").read_bytes()))
    assert arr.min() <= 5 and arr.max() >= 250  # scaled, not clipped to white


def test_transparency_composited_on_white(corpus):
    folder, _, _ = corpus
    arr = np.asarray(open_image((folder / "rgba.png").read_bytes())).astype(int)
    assert arr.min() >= 100  # half-transparent over white is light, never the black of a dropped alpha


def test_pixel_limit_is_configurable():
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (10, 20, 30)).save(buf, "PNG")
    with pytest.raises(SkipItem) as exc:
        open_image(buf.getvalue(), max_pixels=100 * 100)
    assert exc.value.reason == "too_large"
