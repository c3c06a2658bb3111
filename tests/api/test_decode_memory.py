"""Huge images decoded at once cannot push the server's memory without bound.

A real ``corral serve`` process is asked for thumbnails of 16 PNGs just under its pixel limit, all
at once. Its resident memory is read from /proc while they decode: the growth must stay within
the decode memory budget it was configured with (plus the interpreter's own working room), every
request must still get its thumbnail, and the memory must be given back afterwards.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from corral.api.jobs import CLI_BOOT
from tests.api.conftest import build_curation_ws, free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")

SIDE = 3000  # 9.0 M pixels: just under the 9.5 M pixel limit the server is given
PIXEL_LIMIT = 9_500_000
BUDGET = 200 << 20  # the server's decode memory budget, in bytes
#: what a Python web server's resident memory moves by with no image in flight (request objects,
#: thread stacks, response buffers); the decodes' own memory must fit in the budget above it
ROOM = 96 << 20
COUNT = 16


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def near_limit_pngs(count: int, side: int) -> list[bytes]:
    """``count`` different RGB PNGs of ``side`` x ``side`` pixels, a few hundred kilobytes each: the
    pixel rows are compressed once, and a text chunk makes each file (and so each item id) its own."""
    row = np.zeros((side, 3), dtype=np.uint8)
    row[:, 0] = np.arange(side) % 251  # a gradient, so the decoder has real work
    raw = b"".join(b"\x00" + row.tobytes() for _ in range(side))
    idat = _chunk(b"IDAT", zlib.compress(raw, 6))
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    return [head + _chunk(b"tEXt", b"Comment\x00copy %d" % i) + idat + _chunk(b"IEND", b"") for i in range(count)]


def _add_big_items(root: Path, folder: Path, files: list[bytes]) -> list[str]:
    from corral.pipeline.decode import content_id
    from corral.storage.workspace import Workspace, atomic_write_json, atomic_write_table, embedding_table, items_table

    folder.mkdir(parents=True)
    rows = []
    for i, data in enumerate(files):
        path = folder / f"big{i:02d}.png"
        path.write_bytes(data)
        rows.append({"id": content_id(data), "uri": str(path), "status": "ok", "width": SIDE, "height": SIDE, "bytes": len(data)})
    es = Workspace(root).embedding_set("big")
    es.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(es.sidecar_path, {"model": "test", "dim": 8, "dtype": "float32", "count": len(rows)})
    emb_path, items_path = es.shard_paths(0)
    vecs = np.eye(len(rows), 8, dtype=np.float32) + 0.01
    atomic_write_table(emb_path, embedding_table([r["id"] for r in rows], vecs / np.linalg.norm(vecs, axis=1, keepdims=True)))
    atomic_write_table(items_path, items_table(rows))
    return [r["id"] for r in rows]


def _rss(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def _get(url: str, token: str) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


@pytest.fixture
def big_server(tmp_path):
    cur = build_curation_ws(tmp_path / "ws", extra_points=50)
    ids = _add_big_items(cur.root, tmp_path / "big", near_limit_pngs(COUNT, SIDE))
    port = free_port()
    env = {**os.environ, "CORRAL_DECODE_MEMORY_BYTES": str(BUDGET), "CORRAL_MAX_IMAGE_PIXELS": str(PIXEL_LIMIT)}
    p = subprocess.Popen(
        [sys.executable, "-c", CLI_BOOT, "serve", "--workspace", str(cur.root), "--port", str(port), "--no-warm-split", "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if _get(f"{url}/api/health", "")[0] == 200:
                break
        except OSError:
            pass
        if time.time() > deadline or p.poll() is not None:
            p.kill()
            raise AssertionError("server did not start: " + p.communicate()[1].decode(errors="replace")[-2000:])
        time.sleep(0.2)
    try:
        yield p.pid, url, cur.tokens["viewer"], ids, cur.image_ids[0]
    finally:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def test_sixteen_near_limit_pngs_at_once_stay_within_the_decode_budget(big_server):
    from PIL import Image

    pid, url, token, big_ids, small_id = big_server
    # warm up: the thumbnail code path (PIL's plugins, the JPEG encoder) is loaded by a small image
    assert _get(f"{url}/api/items/{small_id}/thumb?size=256", token)[0] == 200
    time.sleep(0.5)
    base = _rss(pid)

    peak = [base]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss(pid))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(COUNT) as pool:
            answers = list(pool.map(lambda i: _get(f"{url}/api/items/{i}/thumb?size=256", token), big_ids))
    finally:
        done.set()
        watcher.join()

    for status, body, _ in answers:
        assert status == 200, body[:300]
        with Image.open(io.BytesIO(body)) as im:
            assert im.format == "JPEG" and max(im.size) == 256
    growth = peak[0] - base
    assert growth <= BUDGET + ROOM, f"the server grew by {growth >> 20} MiB decoding {COUNT} images at once; its decode budget is {BUDGET >> 20} MiB"

    time.sleep(1.0)
    kept = _rss(pid) - base
    assert kept <= ROOM, f"the server kept {kept >> 20} MiB after the decodes finished (peak growth {growth >> 20} MiB)"
