"""Detectors by name, box cleaning and crop geometry, and the detect step inside the embed stage.

Real detectors (OpenCV's Haar cascade, dlib's HOG and CNN detectors) on real ORL faces pasted
onto canvases; hostile files, faceless, tiny and huge images; a detector that returns boxes
outside the image; reruns that resume.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from corral.api.cli import main
from corral.pipeline import crops as cropping
from corral.pipeline import detect
from corral.pipeline.embed import EmbedConfig, embed
from corral.pipeline.weights import WeightsNotFound
from corral.storage.workspace import Workspace
from tests.conftest import shared_data
from bench.groups import compose, face_box, orl_photos
from corral.storage.boxes import iou
from tests.pipeline.hostile import make_corpus

FACE_CFG = dict(progress=False, batch_size=8, model="dlib:face-resnet")


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory) -> tuple[Path, list]:
    """One 520 x 340 canvas with two ORL faces (two people) pasted at 1.8x."""
    root = tmp_path_factory.mktemp("two")
    photos = orl_photos(shared_data("orl_faces", "images"), people=2, photos=range(0, 1), seed=3)
    faces = compose(root, photos, per_image=2, size=(520, 340), scale=(1.8, 1.8), seed=3, prefix="two")
    return root / faces[0].image, faces


# -- names ----------------------------------------------------------------------------------


def test_names_resolve_and_unknown_names_fail_with_close_matches():
    name, why = detect.resolve_name("face")
    assert name == "dlib:hog-face" and "dlib:cnn-face" in why  # dlib-bin has no CUDA: the CNN would take seconds a photo
    with pytest.raises(ValueError, match="close matches: dlib:hog-face"):
        detect.resolve_name("dlib:hog-fase")
    with pytest.raises(ValueError, match="corral detectors"):
        detect.resolve_name("yolo")
    rc, out, err = run_cli("detectors")
    listed = {r["name"]: r for r in json.loads(out.strip().splitlines()[-1])["detectors"]}
    assert rc == 0 and {"opencv:haar-face", "dlib:hog-face", "dlib:cnn-face", "torchvision:fasterrcnn_resnet50_fpn"} <= set(listed)
    assert all(listed[n]["status"] == "ready" for n in ("opencv:haar-face", "dlib:hog-face", "dlib:cnn-face"))
    assert listed["torchvision:fasterrcnn_resnet50_fpn"]["status"] == "needs weights"
    assert "--detector-weights" in listed["torchvision:fasterrcnn_resnet50_fpn"]["how_to_fix"]
    assert "face -> dlib:hog-face" in err


@pytest.mark.parametrize("name", ["opencv:haar-face", "dlib:hog-face", "dlib:cnn-face"])
def test_each_face_detector_finds_the_pasted_faces(name, two_faces):
    path, faces = two_faces
    img = np.array(Image.open(path).convert("RGB"))
    det = detect.create_detector(name, min_size=80).detect([img])[0]
    assert det.boxes.dtype == np.float32 and det.boxes.shape == (len(det), 4) and det.scores.shape == (len(det),)
    xywh = [(b[0], b[1], b[2] - b[0], b[3] - b[1]) for b in det.boxes]
    for f in faces:
        assert max((iou(b, f.box) for b in xywh), default=0) >= 0.5, (name, f, xywh)


def test_torchvision_detector_weights_come_from_a_local_file(tmp_path, two_faces):
    import torchvision

    arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
    with pytest.raises(WeightsNotFound, match=r"--detector-weights FILE .*fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9\.pth"):
        detect.create_detector(f"torchvision:{arch}")
    with pytest.raises(WeightsNotFound, match="no such file"):
        detect.create_detector(f"torchvision:{arch}", weights=str(tmp_path / "missing.pth"))
    # A weight file for another network is refused with the reason.
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "other.pth")
    with pytest.raises(WeightsNotFound, match="does not hold weights for"):
        detect.create_detector(f"torchvision:{arch}", weights=str(tmp_path / "other.pth"))
    # The right network's state dict loads and detects (untrained here: no COCO weights offline).
    model = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=91)
    torch.save(model.state_dict(), tmp_path / "mine.pth")
    det = detect.create_detector(f"torchvision:{arch}", weights=str(tmp_path / "mine.pth"))
    assert det.info["weights_hash"].startswith("sha256:") and len(det.categories) == 91 and det.categories[1] == "person"
    path, _ = two_faces
    img = np.array(Image.open(path).convert("RGB"))
    found = det.detect([img, img[:100, :150]])
    assert len(found) == 2
    for d, (h, w) in zip(found, [(340, 520), (100, 150)]):
        assert d.boxes.shape == (len(d), 4) and len(d.categories) == len(d)
        assert (d.boxes[:, 0] >= 0).all() and (d.boxes[:, 2] <= w + 1e-3).all() and (d.boxes[:, 3] <= h + 1e-3).all()


# -- box cleaning and crop geometry ----------------------------------------------------------


def test_boxes_are_clipped_rounded_and_filtered_with_counts():
    boxes = np.array(
        [
            [10, 10, 60, 70],  # fine
            [-20, 5, 30, 45],  # leaves the image on the left: clipped
            [500, 500, 600, 600],  # wholly outside
            [80, 90, 20, 30],  # corners swapped: fixed, then clipped at the bottom
            [np.nan, 0, 10, 10],  # nonsense
            [5, 5, 12, 12],  # too small
            [20, 20, 90, 90],  # low score
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.9, 0.7, 0.9, 0.9, 0.1], np.float32)
    counts: Counter = Counter()
    kept = cropping.clean_boxes(detect.Detections(boxes, scores), 100, 80, min_score=0.5, min_size=16, counts=counts)
    assert [k[0] for k in kept] == [[10, 10, 50, 60], [0, 5, 30, 40], [20, 30, 60, 50]]
    assert counts == Counter(boxes=7, clipped=2, outside=1, invalid=1, small=1, low_score=1)


def test_square_crops_keep_the_box_centred_and_fill_outside_with_black():
    h, w = 60, 100
    img = torch.zeros((h, w, 3), dtype=torch.uint8)
    img[20:40, 30:50] = torch.tensor([255, 0, 0], dtype=torch.uint8)  # a red 20 x 20 square
    px, inner = cropping.cut_squares(img, [[30, 20, 20, 20], [0, 0, 20, 20]], size=40, pad=0.5)
    assert px.shape == (2, 40, 40, 3) and px.dtype == torch.uint8
    # Box side 20 with pad 0.5 -> a 40 px square, so no resizing: the red square fills the middle 20 x 20.
    assert inner[0].tolist() == [10.0, 10.0, 30.0, 30.0]
    assert (px[0, 10:30, 10:30, 0] == 255).all() and (px[0, :10, :, 0] == 0).all()
    # At the corner the square leaves the image: the part outside is black, the box keeps its place.
    assert inner[1].tolist() == [10.0, 10.0, 30.0, 30.0]
    assert (px[1, :10] == 0).all() and (px[1, :, :10] == 0).all()
    # Resized crops: a 2x larger square is halved.
    px2, inner2 = cropping.cut_squares(img, [[30, 20, 20, 20]], size=20, pad=0.5)
    assert inner2[0].tolist() == [5.0, 5.0, 15.0, 15.0] and int(px2[0, 10, 10, 0]) == 255


def test_boxes_on_huge_photos_are_cut_without_huge_buffers():
    """A 3000 px box on a 4000 x 3000 photo: sampled down before the resize, same picture."""
    h, w = 3000, 4000
    img = torch.zeros((h, w, 3), dtype=torch.uint8)
    img[:, : w // 2] = torch.tensor([255, 0, 0], dtype=torch.uint8)  # left half red, right half blue
    img[:, w // 2 :] = torch.tensor([0, 0, 255], dtype=torch.uint8)
    img[1400:1600, 1900:2100] = 255  # a white square in the middle
    px, inner = cropping.cut_squares(img, [[500, 0, 3000, 3000]], size=64, pad=0.2)
    assert px.shape == (1, 64, 64, 3)
    c = px[0].int()
    assert c[32, 5, 0] > 200 and c[32, 5, 2] < 50 and c[32, 58, 2] > 200 and c[32, 58, 0] < 50
    assert (c[32, 32] > 200).all()  # the white square stays in the centre
    assert (c[1, 32] == 0).all() and (c[62, 32] == 0).all()  # above and below the photo: black
    assert inner[0].tolist() == pytest.approx([64 * 0.2 / 1.4, 64 * 0.2 / 1.4, 64 * 1.2 / 1.4, 64 * 1.2 / 1.4], abs=0.05)


def test_main_process_path_gives_the_worker_path_crops(two_faces):
    """The CUDA path (detect in the main process, cut on the device), run here on the CPU."""
    from corral.pipeline.ingest import SourceItem

    path, _ = two_faces
    opts = cropping.CropOptions(detector="dlib:hog-face", min_score=0.0, min_size=40, pad=0.3, crop_size=64, detect_max_side=2048)
    item = [SourceItem(str(path), path.stat().st_size)]
    kw = dict(max_pixels=10**8, endpoint_url=None, detector_options={"min_size": 40})
    in_worker = cropping.CropDataset(item, opts, detect_here=True, **kw)[0]
    in_main = cropping.CropDataset(item, opts, detect_here=False, **kw)[0]
    assert "image" in in_main and "crops" not in in_main
    cropping.detect_in_main([in_main], detect.create_detector("dlib:hog-face", min_size=40), opts, "cpu")
    assert in_main["boxes"] == in_worker["boxes"] and len(in_worker["boxes"]) == 2
    assert torch.equal(in_main["crops"], in_worker["crops"]) and torch.equal(in_main["inner"], in_worker["inner"])


# -- the detect step in the embed stage ------------------------------------------------------


class OffTheEdgeDetector:
    """A real (if silly) detector: always the same boxes, some outside any image; fails on narrow images."""

    name = "test:off-the-edge"
    kind = "object"
    default_min_score = 0.0
    uses_gpu = False
    info = {"name": "test:off-the-edge"}

    def __init__(self, **_):
        pass

    def to(self, device):
        return self

    def detect(self, images):
        out = []
        for img in images:
            h, w = img.shape[:2]
            if w < 50:
                raise RuntimeError("cannot look at narrow images")
            boxes = np.array([[-50, -50, 60, 60], [w - 30, h - 30, w + 500, h + 500], [w + 10, 0, w + 90, 80], [np.inf, 0, 5, 5], [10, 10, 50, 50]], np.float32)
            out.append(detect.Detections(boxes, np.ones(len(boxes), np.float32), ["thing"] * len(boxes)))
        return out


def test_bad_input_is_handled_counted_and_nothing_crashes(tmp_path, two_faces):
    src = tmp_path / "src"
    _, bad = make_corpus(src)  # unreadable, truncated, empty, bombs... plus small faceless images
    shutil.copy(two_faces[0], src / "two.png")
    Image.new("RGB", (12, 9), (128, 128, 128)).save(src / "tiny.png")
    shutil.copytree(src, tmp_path / "src2", symlinks=True)  # the same without the huge photo, for the second run
    # A huge photo: faces pasted at 5x on a 3600 x 2400 canvas, searched at 800 px and cut at full size.
    huge = orl_photos(shared_data("orl_faces", "images"), people=2, photos=range(1, 2), skip_people=10, seed=5)
    big_faces = compose(tmp_path / "big", huge, per_image=2, size=(3600, 2400), scale=(5.0, 5.0), seed=5, prefix="huge")
    shutil.copy(tmp_path / "big" / big_faces[0].image, src / "huge.png")
    res = embed(str(src), workspace=tmp_path / "ws", config=EmbedConfig(detector="face", detect_max_side=800, **FACE_CFG))
    expected = Counter(bad.values())
    assert res.skipped_by_reason == dict(expected) and res.skipped == len(bad)
    d = res.detection
    assert d["too_small"] >= 1 and d["no_boxes"] >= 1 and d["images"] == res.items - res.skipped - res.duplicates
    assert res.embedded == d["crops"] == 4
    items = Workspace(tmp_path / "ws").items().to_pylist()
    by_name = {Path(r["uri"]).name: r for r in items if not r["parent_id"]}
    assert by_name["tiny.png"]["status"] == "ok" and by_name["huge.png"]["width"] == 3600
    huge_crops = [r for r in items if r["parent_id"] == by_name["huge.png"]["id"]]
    for f in big_faces:
        assert max(iou(json.loads(c["bbox"]), f.box) for c in huge_crops) >= 0.5
    skipped = (tmp_path / "ws" / "skipped.csv").read_text()
    assert all(name in skipped for name in bad)

    # A detector that returns boxes outside the image: clipped or dropped, counted, never fatal.
    detect.register_detector(detect.DetectorSpec("test:off-the-edge", "object", "test", lambda **o: OffTheEdgeDetector(**o), lambda: None))
    try:
        res2 = embed(str(tmp_path / "src2"), workspace=tmp_path / "ws2", config=EmbedConfig(detector="test:off-the-edge", min_size=16, **FACE_CFG))
    finally:
        detect._SPECS.pop("test:off-the-edge", None)
    d2 = res2.detection
    assert d2["failed"] == 1  # rotated.jpg is 40 px wide; its item stays, without crops
    searched = d2["images"] - d2["too_small"] - d2["failed"]
    assert d2["outside"] == searched and d2["invalid"] == searched and d2["clipped"] >= 2 * searched
    assert res2.embedded == d2["crops"] > 0
    for r in Workspace(tmp_path / "ws2").items().to_pylist():
        if r["parent_id"]:
            x, y, w, h = json.loads(r["bbox"])
            parent = next(p for p in items if p["id"] == r["parent_id"])
            assert x >= 0 and y >= 0 and x + w <= parent["width"] and y + h <= parent["height"]
            assert json.loads(r["meta"])["category"] == "thing"


def test_rerun_resumes_and_crop_ids_are_stable(tmp_path, two_faces):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(two_faces[0], src / "a.png")
    first = embed(str(src), workspace=tmp_path / "ws", config=EmbedConfig(detector="dlib:hog-face", **FACE_CFG))
    again = embed(str(src), workspace=tmp_path / "ws", config=EmbedConfig(detector="dlib:hog-face", **FACE_CFG))
    assert first.embedded == 2 and again.embedded == 0 and again.already_done == 1
    # A copy of the photo under another name is a duplicate: recorded, no new crops.
    shutil.copy(two_faces[0], src / "b.png")
    grown = embed(str(src), workspace=tmp_path / "ws", config=EmbedConfig(detector="dlib:hog-face", **FACE_CFG))
    assert grown.embedded == 0 and grown.duplicates == 1
    items = Workspace(tmp_path / "ws").items().to_pylist()
    parent = next(r for r in items if r["uri"].endswith("a.png"))
    for c in (r for r in items if r["parent_id"]):
        assert c["id"] == cropping.crop_id(parent["id"], json.loads(c["bbox"]))
    # The same set with another detector is refused rather than mixed.
    with pytest.raises(ValueError, match="detector"):
        embed(str(src), workspace=tmp_path / "ws", config=EmbedConfig(detector="opencv:haar-face", name="dlib_face-resnet__dlib_hog-face", **FACE_CFG))


def test_crops_work_with_any_embedder_and_the_cli_reports_the_counts(tmp_path, two_faces):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(two_faces[0], src / "two.png")
    rc, out, err = run_cli("embed", str(src), "--workspace", str(tmp_path / "ws"), "--detector", "opencv:haar-face", "--min-size", "60", "--pad", "0.1", "--batch-size", "4")
    summary = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and summary["model"] == "timm:tf_efficientnet_lite0" and summary["dim"] == 1280
    assert summary["embedded"] == summary["detection"]["crops"] == 2 and summary["detection"]["pad"] == 0.1
    assert "crops from 1 images" in err and "crops/s" in err
    assert Path(summary["embeddings"]).name == "tf_efficientnet_lite0__opencv_haar-face"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--detector", "dlib:hog-fase"], "close matches: dlib:hog-face"),
        (["--detector", "face", "--pad", "5"], "pad=5.0"),
        (["--detector", "face", "--min-size", "0"], "min_size=0"),
        (["--detector", "face", "--min-score", "nan"], "min_score=nan"),
    ],
)
def test_bad_options_fail_before_any_work(tmp_path, args, message):
    (tmp_path / "src").mkdir()
    rc, _, err = run_cli("embed", str(tmp_path / "src"), "--workspace", str(tmp_path / "ws"), *args)
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "ws").exists()


def test_face_box_template_matches_the_tile():
    assert face_box((100, 50, 200, 100)) == pytest.approx((110.0, 72.0, 170.0, 70.0))


@pytest.mark.gpu
def test_cuda_path_detects_in_the_main_process_and_cuts_on_the_device(tmp_path, two_faces):
    """On CUDA a GPU detector runs batched in the main process; the crops match the CPU run's boxes."""
    import torchvision

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
    model = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=91)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(two_faces[0], src / "two.png")
    cfg = dict(detector=f"torchvision:{arch}", detector_weights=str(tmp_path / "w.pth"), min_score=0.0, min_size=8, progress=False)
    gpu = embed(str(src), workspace=tmp_path / "gpu", config=EmbedConfig(device="cuda", **cfg))
    cpu = embed(str(src), workspace=tmp_path / "cpu", config=EmbedConfig(device="cpu", **cfg))
    assert gpu.device.startswith("cuda") and gpu.detection["images"] == 1
    boxes = lambda ws: sorted(r["bbox"] for r in Workspace(ws).items().to_pylist() if r["parent_id"])  # noqa: E731
    got, want = boxes(tmp_path / "gpu"), boxes(tmp_path / "cpu")
    assert abs(len(got) - len(want)) <= max(2, len(want) // 10)  # untrained weights: near-threshold boxes may differ
    # Haar (a CPU detector) on a CUDA run: detection in the workers, vectors from the GPU model.
    res = embed(str(src), workspace=tmp_path / "haar", config=EmbedConfig(device="cuda", detector="opencv:haar-face", min_size=60, progress=False))
    assert res.embedded == 2
