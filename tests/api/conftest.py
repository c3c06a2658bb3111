"""Fixtures for the API and viewer tests: small real workspaces, the app, a live server, a browser.

``curation_ws`` is built in code in a second: 48 generated object images (tests/generated.py) registered as items the way
an embed run records them (content-hash ids, uris), a map of them plus a few thousand synthetic
points around three blobs, a label store and one user per role. The browser tests use a real map
of the generated set (``generated_map``), embedded and mapped once per session.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.generated import generated_data

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


@dataclass
class Curation:
    root: Path
    tokens: dict[str, str]  # role name -> token (users are named after their role)
    image_ids: list[str]  # items with real images, in map order of writing
    image_paths: list[Path]
    classes: list[str]  # class of each image item
    n: int  # points on the map
    map_name: str = "main"

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def build_curation_ws(root: Path, *, extra_points: int = 3000, seed: int = 0) -> Curation:
    from corral.api.auth import UserStore
    from corral.pipeline.decode import content_id
    from corral.storage.labels import LabelStore
    from corral.storage.maps import clusters_table, points_table, write_map
    from corral.storage.workspace import Workspace, atomic_write_json, atomic_write_table, embedding_table, items_table

    rng = np.random.default_rng(seed)
    ws = Workspace(root).ensure()
    classes, paths = [], []
    for obj in ("obj01", "obj02", "obj03", "obj04"):
        files = sorted(generated_data("images", obj).glob("*.png"))[:12]
        paths += files
        classes += [obj] * len(files)
    ids = [content_id(p.read_bytes()) for p in paths]
    extra_ids = [f"{v:032x}" for v in rng.integers(1, 2**62, extra_points, dtype=np.int64)]
    es = ws.embedding_set("test")
    es.path.mkdir(parents=True, exist_ok=True)
    # one direction per object plus a little noise, so a recognition index built on them works
    centres_v = rng.normal(size=(4, 8))
    vecs = (centres_v[[int(c[-2:]) - 1 for c in classes]] + 0.15 * rng.normal(size=(len(ids), 8))).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = [{"id": i, "uri": str(p), "status": "ok", "width": 128, "height": 128, "bytes": p.stat().st_size} for i, p in zip(ids, paths)]
    atomic_write_json(es.sidecar_path, {"model": "test", "dim": 8, "dtype": "float32", "count": len(ids)})
    emb_path, items_path = es.shard_paths(0)
    atomic_write_table(emb_path, embedding_table(ids, vecs))
    atomic_write_table(items_path, items_table(rows))

    # Images: one tight blob per object; extra points: three wide blobs plus noise.
    centres = {"obj01": (0, 0), "obj02": (6, 0), "obj03": (0, 6), "obj04": (6, 6)}
    xy_img = np.array([centres[c] for c in classes], dtype=np.float32) + rng.normal(0, 0.3, (len(ids), 2))
    cl_img = np.array([int(c[-2:]) - 1 for c in classes], dtype=np.int32)
    k_extra = rng.integers(0, 3, extra_points)
    xy_extra = np.array([(-8, -8), (14, -8), (-8, 14)], dtype=np.float32)[k_extra] + rng.normal(0, 1.2, (extra_points, 2))
    cl_extra = (k_extra + 4).astype(np.int32)
    noise = rng.random(extra_points) < 0.05
    cl_extra[noise] = -1
    all_ids = ids + extra_ids
    xy = np.concatenate([xy_img, xy_extra]).astype(np.float32)
    cl = np.concatenate([cl_img, cl_extra])
    n = len(all_ids)
    prob = np.where(cl >= 0, rng.uniform(0.3, 1.0, n), 0).astype(np.float32)
    outlier = (1 - prob).astype(np.float32)
    is_new = np.zeros(n, bool)
    is_new[len(ids) : len(ids) + 10] = True
    k = int(cl.max()) + 1
    write_map(
        ws.map_dir("main"),
        points=points_table(ids=all_ids, xy=xy, cluster=cl, probability=prob, outlier_score=outlier, is_new=is_new),
        clusters=clusters_table(cluster=np.arange(k), size=np.bincount(cl[cl >= 0], minlength=k), exemplars=[[all_ids[j] for j in np.flatnonzero(cl == c)[:3]] for c in range(k)], cohesion=np.full(k, 0.5)),
        meta={"created_at": "2026-01-01T00:00:00Z", "embeddings": "test", "model": "test"},
    )
    store = LabelStore.open(ws)
    store.register_items(extra_ids)
    store.close()
    users = UserStore(ws.root)
    tokens = {role: users.add(role, role=role) for role in ("admin", "curator", "viewer", "service")}
    tokens["curator2"] = users.add("curator2", role="curator")
    return Curation(ws.root, tokens, ids, paths, classes, n)


@pytest.fixture
def curation_ws(tmp_path) -> Curation:
    return build_curation_ws(tmp_path / "ws")


@pytest.fixture
def client(curation_ws):
    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.api.settings import Settings

    app = create_app(Settings(workspace=curation_ws.root, max_request_bytes=2 * 1024 * 1024, max_body_bytes=2 * 1024 * 1024))
    with TestClient(app) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The real app under uvicorn on a free loopback port, in a thread."""

    def __init__(self, root: Path, **settings):
        import uvicorn

        from corral.api.app import create_app
        from corral.api.settings import Settings

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(Settings(workspace=root, port=self.port, **settings))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server(curation_ws):
    with LiveServer(curation_ws.root) as srv:
        yield srv


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (Debian's package)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (the .ci/run script does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


#: run in every page before its own scripts: report each Content-Security-Policy violation to the test
CSP_WATCH_JS = """
window.addEventListener("securitypolicyviolation", (e) => {
  window.__corralCspViolation(`${e.effectiveDirective} refused ${e.blockedURI || "an inline script or style"} in ${e.documentURI} (${e.sourceFile || "page"}:${e.lineNumber})`);
}, true);
"""


@contextlib.contextmanager
def browser_context(browser, **options):
    """A fresh browser context (its own cookies: another user) that enforces every page's
    Content-Security-Policy, as a user's browser does. Each violation, whether the page's event
    reports it or Chromium's console does (a worker's), is kept in ``ctx.csp_violations``, and
    leaving the block without an error asserts there was none."""
    if options.get("bypass_csp"):
        raise ValueError("browser tests run with the page's CSP enforced")
    ctx = browser.new_context(**options)
    ctx.csp_violations = []
    ctx.expose_binding("__corralCspViolation", lambda _source, text: ctx.csp_violations.append(text))
    ctx.add_init_script(CSP_WATCH_JS)
    ctx.on("console", lambda m: ctx.csp_violations.append(m.text) if m.type == "error" and "Content Security Policy" in m.text else None)
    try:
        yield ctx
        for page in ctx.pages:  # a round trip, so that reports already sent have arrived
            if not page.is_closed():
                page.evaluate("() => 0")
        assert not ctx.csp_violations, "the page broke its Content-Security-Policy:\n" + "\n".join(ctx.csp_violations)
    finally:
        ctx.close()


@contextlib.contextmanager
def page_for(browser, url: str, *, viewport=(1280, 800)):
    """A page at ``url`` in a fresh :func:`browser_context` (CSP enforced and watched); the page's
    console errors are collected in ``page.errors``."""
    with browser_context(browser, viewport={"width": viewport[0], "height": viewport[1]}) as ctx:
        page = ctx.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        # with the resource's address, so a failed request says which one it was
        page.on("console", lambda m: page.errors.append(f"{m.text} [{m.location.get('url', '')}]" if m.location.get("url") else m.text) if m.type == "error" else None)
        page.goto(url)
        yield page


def wait_ready(page, timeout: float = 60_000) -> None:
    page.wait_for_function("() => window.__corral && (window.__corral.error || (window.__corral.view && window.__corral.timings.firstFrameAt))", timeout=timeout)
    err = page.evaluate("() => window.__corral.error || null")
    assert err is None, f"viewer failed to start: {err}; page errors: {page.errors}"
