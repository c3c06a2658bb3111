"""`corral serve` as a user runs it: one command, a URL with a token, the real server on loopback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from corral.api.jobs import CLI_BOOT
from tests.api.conftest import free_port

VIEWER = Path(__file__).resolve().parents[2] / "viewer"


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def serve(curation_ws):
    procs = []

    def start(root: Path, *extra: str):
        port = free_port()
        p = subprocess.Popen([sys.executable, "-c", CLI_BOOT, "serve", "--workspace", str(root), "--port", str(port), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        first = json.loads(p.stdout.readline())
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if _get(f"http://127.0.0.1:{port}/api/health")[0] == 200:
                    return first, port, p
            except OSError:
                time.sleep(0.2)
        p.kill()
        raise AssertionError("server did not start: " + p.stderr.read())

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=20)


def test_single_user_mode_is_one_command(serve, curation_ws, tmp_path):
    import shutil

    root = tmp_path / "solo"
    shutil.copytree(curation_ws.root, root, ignore=shutil.ignore_patterns("users.json"))
    first, port, _ = serve(root)
    assert first["single_user"] is True
    m = re.match(rf"http://127\.0\.0\.1:{port}/\?token=(crl_\S+)$", first["url"])
    assert m, first["url"]
    token = m.group(1)
    status, body = _get(f"http://127.0.0.1:{port}/")
    assert status == 200 and b"/viewer.js?v=" in body
    assert _get(f"http://127.0.0.1:{port}/api/maps", token)[0] == 200
    assert json.loads(_get(f"http://127.0.0.1:{port}/api/me", token)[1])["user"]["role"] == "admin"
    assert _get(f"http://127.0.0.1:{port}/api/maps")[0] == 401
    assert _get(f"http://127.0.0.1:{port}/docs")[0] == 200
    assert json.loads(_get(f"http://127.0.0.1:{port}/openapi.json")[1])["paths"]["/api/maps/{name}/points.bin"]


def test_team_mode_prints_no_token(serve, curation_ws):
    first, port, _ = serve(curation_ws.root)
    assert first["single_user"] is False and "token" not in first["url"]
    assert _get(f"http://127.0.0.1:{port}/api/maps", curation_ws.tokens["viewer"])[0] == 200


def test_bad_workspace_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, "-c", CLI_BOOT, "serve", "--workspace", str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no such folder" in p.stderr and "Traceback" not in p.stderr


def test_viewer_is_one_cached_script_and_ships_in_the_wheel(live_server, corral_wheel):
    """The page loads the modules joined into one versioned script (one request at start-up), and a
    wheel of the package carries the viewer, so `pip install corral` users get it without Node."""
    import zipfile

    from corral.api.bundle import build_bundle

    modules = {p.name for p in (VIEWER / "src").glob("*.js")}
    bundle = build_bundle(VIEWER / "src")
    assert set(bundle.modules) == modules  # every module is reachable from main.js, none is left out
    status, html = _get(f"{live_server.url}/")
    m = re.search(rb'src="/viewer\.js\?v=(\w+)"', html)
    assert status == 200 and m and m.group(1).decode() == bundle.etag
    with urllib.request.urlopen(f"{live_server.url}/viewer.js?v={bundle.etag}") as r:
        assert "immutable" in r.headers["cache-control"] and r.headers["content-type"].startswith("text/javascript")
        assert r.read().decode() == bundle.code
    # installed, the viewer is the package's data under corral/viewer (pyproject maps viewer/ there)
    names = set(zipfile.ZipFile(corral_wheel).namelist())
    assert "corral/viewer/index.html" in names and "corral/viewer/src/viewer.css" in names
    assert {f"corral/viewer/src/{m}" for m in modules} <= names


def test_bundle_refuses_what_it_cannot_join(tmp_path):
    import pytest

    from corral.api.bundle import BundleError, build_bundle

    (tmp_path / "main.js").write_text("import { a } from './a.js';\nconsole.log(a);\n")
    (tmp_path / "a.js").write_text("import * as b from './b.js';\nexport const a = 1;\n")
    with pytest.raises(BundleError, match="a.js"):
        build_bundle(tmp_path)
    (tmp_path / "a.js").write_text("import { m } from './main.js';\nexport const a = 1;\n")
    with pytest.raises(BundleError, match="circular"):
        build_bundle(tmp_path)
    (tmp_path / "a.js").write_text("const a = 1;\nexport { a };\n")
    with pytest.raises(BundleError, match="exports"):
        build_bundle(tmp_path)
