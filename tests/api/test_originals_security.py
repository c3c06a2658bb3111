"""An original is served only while it is still the file that was embedded (issue: symlink swaps)."""

from __future__ import annotations

import os

import pytest

from tests.digits import digits_folder


@pytest.fixture
def served(tmp_path):
    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.api.auth import UserStore
    from corral.api.settings import Settings
    from corral.pipeline.embed import EmbedConfig, embed
    from corral.storage.workspace import Workspace

    src = tmp_path / "photos"
    digits_folder(src, per_class=2)
    secret = tmp_path / "secret.txt"
    secret.write_text("the label store's password is hunter2\n")
    os.symlink(secret, src / "0" / "link-out.png")  # a link out of the folder, there at embed time
    os.symlink(src / "1" / sorted(os.listdir(src / "1"))[0], src / "2" / "link-in.png")  # a link inside it
    ws = tmp_path / "ws"
    res = embed(str(src), workspace=ws, config=EmbedConfig(model="pixels:8", progress=False))
    token = UserStore(ws).add("viewer", role="viewer")
    items = {r["uri"]: r["id"] for r in Workspace(ws).items().to_pylist() if r["status"] == "ok"}
    with TestClient(create_app(Settings(workspace=ws))) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c, items, secret, res


def test_links_out_of_the_folder_are_not_embedded(served):
    _, items, _, _ = served
    assert not any("link-out" in u for u in items)
    assert not any(os.path.islink(u) for u in items)  # a link inside the folder is recorded as its target


def test_an_original_swapped_for_a_symlink_is_not_served_but_its_thumbnail_is(served):
    c, items, secret, _ = served
    uri, item_id = sorted(items.items())[0]
    ok = c.get(f"/api/items/{item_id}/image")
    assert ok.status_code == 200 and ok.content == open(uri, "rb").read()
    assert c.get(f"/api/items/{item_id}/thumb").status_code == 200  # cached now
    os.unlink(uri)
    os.symlink(secret, uri)
    r = c.get(f"/api/items/{item_id}/image")
    assert r.status_code in (404, 410) and b"hunter2" not in r.content
    assert "symbolic link" in r.text or "not readable" in r.text
    assert c.get(f"/api/items/{item_id}/thumb").status_code == 200


def test_an_original_whose_bytes_changed_answers_410(served):
    c, items, _, _ = served
    uri, item_id = sorted(items.items())[1]
    with open(uri, "ab") as fh:
        fh.write(b"appended")
    r = c.get(f"/api/items/{item_id}/image")
    assert r.status_code == 410 and "changed since it was embedded" in r.json()["error"]
