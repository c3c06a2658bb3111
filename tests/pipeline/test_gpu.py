"""The CUDA paths: on-device JPEG decoding with decode-ahead, and the GPU map (``-m gpu``)."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _photos(folder, count: int = 70):
    """JPEGs of a few sizes and EXIF orientations, a PNG, and two broken files."""
    from PIL import Image

    from tests.pipeline.hostile import jpeg_with_orientation

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    sizes = [(320, 240), (240, 320), (500, 333), (257, 256)]
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        low = rng.integers(0, 255, (4, 5, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC)
        (folder / f"{i:03d}.jpg").write_bytes(jpeg_with_orientation(img, (1, 6, 3, 8)[i % 4]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    (folder / "plain.png").write_bytes(buf.getvalue())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "cut.jpg").write_bytes((folder / "000.jpg").read_bytes()[:300])


def test_device_decode_ahead_matches_cpu_decode(tmp_path):
    from corral.pipeline.embed import EmbedConfig, embed_items
    from corral.pipeline.ingest import list_source
    from corral.pipeline.registry import create_embedder
    from corral.storage.workspace import Workspace

    _photos(tmp_path / "src")
    items = list_source(tmp_path / "src")
    embedder = create_embedder("timm:resnet18", allow_random=True).to("cuda")
    res = {}
    for name, gpu_decode in (("dev", True), ("cpu", False)):
        cfg = EmbedConfig(model="timm:resnet18", random_weights=True, device="cuda", gpu_decode=gpu_decode, batch_size=16, progress=False, shard_size=32)
        res[name] = embed_items(items, workspace=Workspace(tmp_path / name), config=cfg, embedder=embedder)
    assert res["dev"].embedded == res["cpu"].embedded == 71
    assert res["dev"].skipped == res["cpu"].skipped == 2
    assert res["dev"].skipped_by_reason == res["cpu"].skipped_by_reason
    vec = {}
    for name in res:
        ids, v = Workspace(tmp_path / name).default_embedding_set().load()
        vec[name] = dict(zip(ids.tolist(), v))
    assert vec["dev"].keys() == vec["cpu"].keys()
    cos = np.array([float(vec["dev"][k] @ vec["cpu"][k]) for k in vec["dev"]])
    assert np.isfinite(cos).all() and cos.min() > 0.97, cos.min()
    sizes = {name: {r["id"]: (r["width"], r["height"]) for r in Workspace(tmp_path / name).items().to_pylist()} for name in res}
    assert sizes["dev"] == sizes["cpu"]


def test_gpu_map_matches_classes(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    from corral.pipeline.mapping import MapConfig, build_map
    from corral.storage.maps import read_map
    from corral.storage.workspace import Workspace, atomic_write_json, atomic_write_table, embedding_table, items_table

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 64)).astype(np.float32)
    y = rng.integers(0, 8, 4000)
    x = centres[y] + rng.normal(scale=0.35, size=(4000, 64)).astype(np.float32)
    es = Workspace(tmp_path / "ws").embedding_set("vectors")
    es.path.mkdir(parents=True)
    ids = [f"i{i}" for i in range(len(x))]
    emb, items = es.shard_paths(0)
    atomic_write_table(emb, embedding_table(ids, x))
    atomic_write_table(items, items_table([{"id": i, "uri": f"mem/{i}", "status": "ok"} for i in ids]))
    atomic_write_json(es.sidecar_path, {"model": "raw:test", "weights_hash": None, "dim": 64, "dtype": "float32", "count": len(x)})
    res = build_map(workspace=tmp_path / "ws", config=MapConfig(device="cuda"))
    m = read_map(tmp_path / "ws", res.name)
    assert m.meta["params"]["knn"]["method"].startswith("torch:cuda") and m.meta["params"]["layout"]["used"] == "torch"
    order = {i: r for r, i in enumerate(ids)}
    rows = np.array([order[i] for i in m.points.column("id").to_pylist()])
    assert adjusted_rand_score(y[rows], m.points.column("cluster").to_numpy()) > 0.95
