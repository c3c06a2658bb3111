"""The server's decode memory budget: decodes beyond it wait their turn or get 503 with Retry-After,
nothing half-made is cached meanwhile, and thumbnails decode no more than they need."""

from __future__ import annotations

import io
import shutil
import threading
import time
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from corral.api.app import create_app
from corral.api.decodebudget import DecodeBudget, DecodeBusy, release_free_memory
from corral.api.settings import Settings
from corral.api.thumbs import atlas_layout, fitted


def _until(cond, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.005)


@contextmanager
def held(budget: DecodeBudget, cost: int):
    """Hold ``cost`` of ``budget`` from another thread (as another request's decode would)."""
    go, release = threading.Event(), threading.Event()

    def run() -> None:
        with budget.hold(cost):
            go.set()
            release.wait(30)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert go.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join(10)


def test_decodes_beyond_the_budget_wait_in_arrival_order():
    budget = DecodeBudget(100, wait_s=30)
    order: list[str] = []
    peak = [0]

    def decode(name: str, cost: int) -> None:
        with budget.hold(cost):
            order.append(name)
            peak[0] = max(peak[0], budget.in_use)

    with held(budget, 60):
        big = threading.Thread(target=decode, args=("big", 60))
        big.start()
        _until(lambda: len(budget._queue) == 1, "the big decode waits")
        small = threading.Thread(target=decode, args=("small", 10))  # would fit now, but arrived later
        small.start()
        _until(lambda: len(budget._queue) == 2, "the small decode waits behind it")
        assert order == []
    big.join(10)
    small.join(10)
    assert order == ["big", "small"]  # a big image is not starved by a stream of small ones
    assert peak[0] <= 100 and budget.in_use == 0


def test_a_decode_that_cannot_get_room_gets_503_with_retry_after():
    budget = DecodeBudget(100, wait_s=0.2, max_waiting=1)
    with held(budget, 100):
        with pytest.raises(DecodeBusy) as e:
            with budget.hold(1):
                pass
        assert e.value.status == 503 and int(e.value.headers["Retry-After"]) >= 1
    with budget.hold(10**12):  # larger than the whole budget: it runs alone
        assert budget.in_use == 100
    assert budget.refused == 1


def test_too_many_waiting_decodes_are_refused_at_once():
    budget = DecodeBudget(100, wait_s=30, max_waiting=0)
    with held(budget, 100):
        with pytest.raises(DecodeBusy, match="waiting"):
            with budget.hold(1):
                pass


def test_memory_release_is_safe_to_call_anywhere():
    assert release_free_memory() in (True, False)


def _jpeg(size: tuple[int, int], orientation: int = 1) -> bytes:
    im = Image.new("RGB", size, (200, 30, 30))
    im.paste((30, 30, 200), (0, 0, size[0] // 2, size[1]))  # left half blue
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


class Recording(DecodeBudget):
    def __init__(self) -> None:
        super().__init__(1 << 40)
        self.costs: list[int] = []

    def hold(self, cost: int):
        self.costs.append(cost)
        return super().hold(cost)


def test_a_jpeg_thumbnail_decodes_at_reduced_scale():
    budget = Recording()
    im = fitted(Image.open(io.BytesIO(_jpeg((4000, 3000)))), 256, budget)
    assert max(im.size) == 256 and im.mode == "RGB"
    full = 4000 * 3000 * 8
    assert budget.costs and budget.costs[0] <= full // 16  # decoded at 1/4 scale or smaller


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_thumbnails_stay_upright_after_exif_rotation(fmt):
    data = _jpeg((400, 200), orientation=6)
    if fmt == "PNG":  # the same picture and EXIF in a PNG (its EXIF is read after the pixels)
        src = Image.open(io.BytesIO(data))
        buf = io.BytesIO()
        src.save(buf, "PNG", exif=src.getexif().tobytes())
        data = buf.getvalue()
    im = fitted(Image.open(io.BytesIO(data)), 100, Recording())
    assert im.size[1] > im.size[0]  # orientation 6: turned a quarter, so portrait


@pytest.fixture
def app_client(curation_ws):
    app = create_app(Settings(workspace=curation_ws.root, decode_wait_s=0.2, decode_memory_bytes=16 << 20))
    with TestClient(app) as c:
        yield c, app.state.ctx


def test_a_thumbnail_without_room_to_decode_is_503_then_made_later(app_client, curation_ws):
    client, ctx = app_client
    item = curation_ws.image_ids[0]
    url = f"/api/items/{item}/thumb?size=256"
    with held(ctx.thumbs.budget, ctx.thumbs.budget.capacity):
        r = client.get(url, headers=curation_ws.auth("viewer"))
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert "memory" in r.json()["error"]
    r = client.get(url, headers=curation_ws.auth("viewer"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"


def test_an_atlas_without_room_to_decode_is_503_and_not_cached_with_holes(app_client, curation_ws):
    client, ctx = app_client
    view = ctx.maps.get(curation_ws.map_name)
    per = next(level["per"] for level in atlas_layout() if level["lod"] == 1)
    url = f"/api/maps/{curation_ws.map_name}/atlas/1/{int(view.index_of(curation_ws.image_ids[:1])[0]) // per}.jpg"
    atlas_dir = curation_ws.root / "cache" / "atlas"
    with held(ctx.thumbs.budget, ctx.thumbs.budget.capacity):
        r = client.get(url, headers=curation_ws.auth("viewer"))
        assert r.status_code == 503 and "Retry-After" in r.headers
    assert not list(atlas_dir.rglob("*.jpg"))  # no atlas with grey cells where images were
    assert client.get(url, headers=curation_ws.auth("viewer")).status_code == 200
    assert list(atlas_dir.rglob("*.jpg"))


def test_an_image_over_the_pixel_limit_is_not_decoded(curation_ws):
    budget = Recording()
    app = create_app(Settings(workspace=curation_ws.root, max_image_pixels=1000))
    app.state.ctx.thumbs.budget = budget
    with TestClient(app) as c:
        r = c.get(f"/api/items/{curation_ws.image_ids[0]}/thumb?size=256", headers=curation_ws.auth("viewer"))
    assert r.status_code == 404
    assert budget.costs == []


def test_a_recognition_upload_without_room_to_decode_is_503_for_that_image(recognition_setup, tmp_path):
    from corral.api.auth import UserStore

    root = tmp_path / "ws"
    shutil.copytree(recognition_setup.workspace, root)
    token = UserStore(root).add("svc", role="service")
    image = next(iter(recognition_setup.queries.values()))[0].read_bytes()
    auth = {"Authorization": f"Bearer {token}"}
    app = create_app(Settings(workspace=root, decode_wait_s=0.2, decode_memory_bytes=16 << 20))
    with TestClient(app) as c:
        assert c.post("/api/recognize", files=[("images", ("a.png", image, "image/png"))], headers=auth).status_code == 200
        budget = app.state.ctx.extra["decodes"]
        with held(budget, budget.capacity):
            r = c.post("/api/recognize", files=[("images", ("a.png", image, "image/png"))], headers=auth)
            assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
            assert r.json()["results"][0]["status"] == 503
        assert c.post("/api/recognize", files=[("images", ("a.png", image, "image/png"))], headers=auth).status_code == 200
