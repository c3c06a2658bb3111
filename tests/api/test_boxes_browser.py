"""The photos view in headless Chromium against the real server, on a real group-photo set (ORL faces
pasted onto canvases, dlib's HOG detector, dlib's face ResNet): a curator deletes the false box
on a poster, drags a box's edge to fit the face, draws the face the detector missed and names it,
undoes each with Ctrl+Z, and the COCO and LabelMe exports of the revised boxes import back."""

from __future__ import annotations

import json

import httpx
import pytest

from corral.storage.boxes import iou
from tests.api.boxes_ws import copy_ws, group_set
from tests.api.conftest import LiveServer
from tests.api.test_box_revisions import cli
from tests.api.viewer_helpers import open_viewer, shot, wait_ready

pytestmark = pytest.mark.browser

WAIT = 60_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from corral.api.auth import UserStore

    built = group_set(tmp_path_factory.mktemp("groups"))
    root = copy_ws(built, tmp_path_factory.mktemp("boxes-browser") / "ws")
    token = UserStore(root).add("ana", role="curator")
    with LiveServer(root) as srv:
        api = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        try:
            yield srv, token, api, built, root
        finally:
            api.close()


def photo(api, photo_id):
    return api.get(f"/api/photos/{photo_id}").json()


def screen(page, bbox, at=(0.5, 0.5)):
    """Screen position of a point of a box (fractions ``at`` of its width and height) on the large photo."""
    r = page.locator("#photo-img").bounding_box()
    w = page.evaluate("() => window.__corral.photos.photo.width")
    k = r["width"] / w
    return r["x"] + (bbox[0] + at[0] * bbox[2]) * k, r["y"] + (bbox[1] + at[1] * bbox[3]) * k, k


def wait_revision(page, n):
    page.wait_for_function("(n) => { const p = window.__corral.photos; return p.photo && !p.busy && p.photo.version !== n; }", arg=n, timeout=WAIT)


def test_revise_boxes_in_the_photos_view_then_undo_and_round_trip(served, browser, tmp_path):
    srv, token, api, built, root = served
    with open_viewer(browser, srv.url, token) as page:
        wait_ready(page)
        page.keyboard.press("f")  # the photos view
        page.wait_for_selector("#photos-grid .ptile", timeout=WAIT)
        assert page.locator("#photos-grid .ptile").count() == 4
        page.locator("#photos-unnamed").check()  # nothing is named yet: every photo has unnamed boxes
        page.wait_for_function("() => document.querySelector('#photos-count').textContent.startsWith('4 photos')", timeout=WAIT)
        page.wait_for_function("() => [...document.querySelectorAll('#photos-grid img')].every((i) => i.complete && i.naturalWidth > 0)", timeout=WAIT)
        shot(page, "detections-photos.png")
        g0_id = page.locator("#photos-grid .ptile", has_text="group_000.png").get_attribute("data-photo")
        page.locator("#photos-grid .ptile", has_text="group_000.png").click()
        loaded = "() => { const i = document.querySelector('#photo-img'); return i.complete && i.naturalWidth > 0 && document.querySelectorAll('#photo-boxes .box').length === 4; }"
        page.wait_for_function(loaded, timeout=WAIT)
        p0 = photo(api, g0_id)
        poster = max(p0["boxes"], key=lambda b: iou(b["bbox"], built.poster))
        person, truth = built.people[1]
        loose = max(p0["boxes"], key=lambda b: iou(b["bbox"], truth))

        # 1. delete the false box: click it, press Delete
        x, y, _ = screen(page, poster["bbox"])
        page.mouse.click(x, y)
        page.keyboard.press("Delete")
        wait_revision(page, 0)
        p1 = photo(api, g0_id)
        assert poster["id"] not in {b["id"] for b in p1["boxes"]} and page.locator("#photo-boxes .box").count() == 3

        # 2. adjust: select the loose box, drag its right edge onto the face's right edge
        x, y, k = screen(page, loose["bbox"])
        page.mouse.click(x, y)
        handle = page.locator("#photo-boxes .box.sel .h-e").bounding_box()
        hx, hy = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
        target_right = truth[0] + truth[2]
        dx = (target_right - (loose["bbox"][0] + loose["bbox"][2])) * k
        page.mouse.move(hx, hy)
        page.mouse.down()
        page.mouse.move(hx + dx / 2, hy, steps=3)
        page.mouse.move(hx + dx, hy, steps=3)
        page.mouse.up()
        wait_revision(page, p1["version"])
        p2 = photo(api, g0_id)
        adjusted = next(b for b in p2["boxes"] if b["replaces"] == loose["id"])
        x0, y0, _, h0 = loose["bbox"]
        assert (adjusted["bbox"][0], adjusted["bbox"][1], adjusted["bbox"][3]) == (x0, y0, h0)  # only the right edge moved
        assert abs(adjusted["bbox"][0] + adjusted["bbox"][2] - target_right) <= 3  # where the edge was dropped, in photo pixels
        assert iou(adjusted["bbox"], truth) > iou(loose["bbox"], truth)

        # 3. draw the missed face (N, drag) and name it right away
        page.keyboard.press("n")
        x0, y0, _ = screen(page, built.missed, (0, 0))
        x1, y1, _ = screen(page, built.missed, (1, 1))
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=3)
        page.mouse.move(x1, y1, steps=3)
        page.mouse.up()
        wait_revision(page, p2["version"])
        page.wait_for_function("() => document.activeElement && document.activeElement.id === 'photo-name'", timeout=WAIT)
        page.locator("#photo-name").fill(built.missed_person)
        page.keyboard.press("Enter")
        page.wait_for_function("(n) => window.__corral.photos.photo.boxes.some((b) => b.label === n)", arg=built.missed_person, timeout=WAIT)
        p3 = photo(api, g0_id)
        drawn = next(b for b in p3["boxes"] if b["origin"] == "drawn")
        assert drawn["label"] == built.missed_person and iou(drawn["bbox"], built.missed) > 0.9
        page.wait_for_function("() => document.querySelectorAll('#photo-history li').length >= 3", timeout=WAIT)
        shot(page, "detections-photo.png")
        history = api.get(f"/api/photos/{g0_id}/history").json()["history"]
        assert [h["op"] for h in history] == ["draw", "adjust", "delete"] and {h["user"] for h in history} == {"ana"}

        # the revised boxes out and back in, while they stand
        rc, _, _ = cli("export", "-w", str(root), "--format", "coco", "--out", str(tmp_path / "coco.json"))
        assert rc == 0
        doc = json.loads((tmp_path / "coco.json").read_text())
        assert [a["corral_id"] for a in doc["annotations"]] == [drawn["id"]]
        rc, _, _ = cli("export", "-w", str(root), "--format", "labelme", "--out", str(tmp_path / "labelme"))
        shapes = json.loads((tmp_path / "labelme" / "group_000.json").read_text())["shapes"]
        assert rc == 0 and sorted(s["corral_id"] for s in shapes) == sorted(b["id"] for b in p3["boxes"])

        # 4. undo each with Ctrl+Z: the name, the drawn box, the adjustment, the deletion
        page.keyboard.press("Escape")  # leave the name box
        for check in (
            lambda p: next(b for b in p["boxes"] if b["id"] == drawn["id"])["label"] is None,
            lambda p: drawn["id"] not in {b["id"] for b in p["boxes"]},
            lambda p: loose["id"] in {b["id"] for b in p["boxes"]} and adjusted["id"] not in {b["id"] for b in p["boxes"]},
            lambda p: {b["id"] for b in p["boxes"]} == {b["id"] for b in p0["boxes"]},
        ):
            before = api.get("/api/events?since=0&limit=1000").json()
            n_before = len(before["events"]) if isinstance(before, dict) else len(before)
            page.keyboard.press("Control+z")
            page.wait_for_function("() => !window.__corral.photos.busy", timeout=WAIT)
            page.wait_for_timeout(100)
            assert check(photo(api, g0_id))
            after = api.get("/api/events?since=0&limit=1000").json()
            assert (len(after["events"]) if isinstance(after, dict) else len(after)) == n_before + 1
        page.wait_for_function("(n) => document.querySelectorAll('#photo-boxes .box').length === n", arg=len(p0["boxes"]), timeout=WAIT)

        # with the revisions undone, the exports hold the detector's boxes again, and import back
        rc, _, _ = cli("export", "-w", str(root), "--format", "labelme", "--out", str(tmp_path / "labelme"), "--overwrite")
        shapes = json.loads((tmp_path / "labelme" / "group_000.json").read_text())["shapes"]
        assert rc == 0 and sorted(s["corral_id"] for s in shapes) == sorted(b["id"] for b in p0["boxes"])
        rc, rep, _ = cli("labels", "import", str(tmp_path / "coco.json"), "-w", str(root))
        assert rc == 0 and rep["unknown"] == 1  # the drawn box is undone: its annotation finds no box now
        page.keyboard.press("ArrowRight")  # photo by photo: the next one of the grid
        page.wait_for_function("() => document.querySelector('#photos-title').textContent === 'more_000.png'", timeout=WAIT)
        assert page.errors == []
