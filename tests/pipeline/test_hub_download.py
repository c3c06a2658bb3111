"""Hub weights for users online: downloaded on first use, hashed and recorded; offline stays offline.

A stand-in hub on 127.0.0.1 answers the two requests huggingface_hub makes for a file
(``HEAD`` for its metadata, ``GET`` for its bytes, both at ``/<repo>/resolve/<revision>/<file>``)
and serves the ``model.safetensors`` of a randomly initialised tiny timm model under the repository
timm names for it. ``HF_ENDPOINT`` points at it and ``HF_HOME`` is the test's own folder, so no real
hub is ever reached and no real cache is touched.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from corral.pipeline.embed import EmbedConfig, embed
from corral.pipeline.weights import WeightsNotFound
from corral.storage.workspace import Workspace

MODEL = "test_vit.r160_in1k"  # about 0.3 M parameters; timm fetches it from timm/test_vit.r160_in1k
REPO_ID = "timm/" + MODEL
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CFG = dict(model=f"timm:{MODEL}", progress=False, batch_size=4, num_workers=0, device="cpu")


@dataclass
class StandInHub:
    url: str
    weights: Path
    sha256: str
    requests: list[tuple[str, str]] = field(default_factory=list)


def _handler(hub: StandInHub, files: dict[str, bytes]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            hub.requests.append((self.command, self.path))
            repo, sep, rest = self.path.partition("/resolve/")
            revision, _, name = rest.partition("/")
            body = files.get(name) if sep and repo.lstrip("/") == REPO_ID and revision in ("main", COMMIT) else None
            if body is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Error-Message", "Entry not found")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802 (http.server's names)
            self._answer(with_body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(with_body=True)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInHub]:
    import timm
    import torch
    from huggingface_hub import constants
    from safetensors.torch import save_file

    torch.manual_seed(12)
    model = timm.create_model(MODEL, pretrained=False)  # with its classifier, as a hub file has it
    weights = tmp_path / "served" / "model.safetensors"
    weights.parent.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    body = weights.read_bytes()
    hub = StandInHub(url="", weights=weights, sha256=hashlib.sha256(body).hexdigest())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub, {"model.safetensors": body}))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # huggingface_hub reads HF_HUB_OFFLINE when first imported; a suite run with it set must not
    # keep the stand-in hub unreachable.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _images(folder: Path, n: int = 5) -> Path:
    from PIL import Image

    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    for i in range(n):
        base = rng.integers(0, 255, size=(1, 1, 3))
        noise = rng.integers(-40, 40, size=(96, 128, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def _vectors(ws: Path) -> dict[str, np.ndarray]:
    ids, vecs = Workspace(ws).default_embedding_set().load()
    return dict(zip(ids, vecs))


def test_hub_weights_download_once_and_make_the_embedding(hub: StandInHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _images(tmp_path / "src")
    res = embed(str(src), workspace=tmp_path / "ws", config=EmbedConfig(**CFG))
    assert res.embedded == 5
    assert ("GET", f"/{REPO_ID}/resolve/main/model.safetensors") in hub.requests

    # The run records the file's hash and where it came from.
    side = Workspace(tmp_path / "ws").default_embedding_set().sidecar()
    assert side["weights_hash"] == "sha256:" + hub.sha256
    source = side["embedder"]["weights"]
    assert source["kind"] == "hub"
    assert source["hub_id"] == REPO_ID and source["revision"] == COMMIT
    cached = Path(source["path"])
    assert cached.is_relative_to(tmp_path / "hf-home") and cached.read_bytes() == hub.weights.read_bytes()

    # Exactly the served weights: the same vectors as the model loaded straight from that file ...
    embed(str(src), workspace=tmp_path / "ws-file", config=EmbedConfig(**CFG, weights=str(hub.weights)))
    got, ref = _vectors(tmp_path / "ws"), _vectors(tmp_path / "ws-file")
    assert got.keys() == ref.keys()
    for key in got:
        np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=1e-5)
    # ... and not what an untrained model of the same architecture gives (an empty cache, offline).
    with monkeypatch.context() as m:
        m.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
        embed(str(src), workspace=tmp_path / "ws-random", config=EmbedConfig(**CFG, random_weights=True, offline=True))
    rnd = _vectors(tmp_path / "ws-random")
    assert max(float(np.abs(got[k] - rnd[k]).max()) for k in got) > 1e-2

    # A second run is served from the cache: no request reaches the hub.
    hub.requests.clear()
    again = embed(str(src), workspace=tmp_path / "ws-again", config=EmbedConfig(**CFG))
    assert again.embedded == 5 and hub.requests == []
    side = Workspace(tmp_path / "ws-again").default_embedding_set().sidecar()
    assert side["weights_hash"] == "sha256:" + hub.sha256 and side["embedder"]["weights"]["kind"] == "hf-cache"


def test_offline_never_downloads_and_says_how_to_get_weights(hub: StandInHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _images(tmp_path / "src", n=2)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound, match=r"weights for test_vit not found offline .*--weights PATH"):
        embed(str(src), workspace=tmp_path / "ws", config=EmbedConfig(**CFG))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(WeightsNotFound, match="--offline"):
        embed(str(src), workspace=tmp_path / "ws", config=EmbedConfig(**CFG, offline=True))
    assert hub.requests == []


def test_cli_offline_flag_gives_the_clear_error(hub: StandInHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from corral.api.cli import main

    src = _images(tmp_path / "src", n=2)
    code = main(["-q", "embed", str(src), "--workspace", str(tmp_path / "ws"), "--model", f"timm:{MODEL}", "--device", "cpu", "--workers", "0", "--offline"])
    err = capsys.readouterr().err
    assert code == 2
    assert "corral embed: error: weights for test_vit not found offline" in err and "--weights PATH" in err
    assert hub.requests == []


def test_an_unreachable_hub_is_a_clear_error(hub: StandInHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)  # its retries, without the waits
    src = _images(tmp_path / "src", n=1)
    with pytest.raises(WeightsNotFound, match=r"could not download the weights of timm/test_vit.r160_in1k from http://127\.0\.0\.1"):
        embed(str(src), workspace=tmp_path / "ws", config=EmbedConfig(**CFG))
