"""The embed stage's options are said once (EmbedConfig): documented, and a bad value gets the same
words from Python, `corral embed` and an HTTP embed job, which starts nothing; what a job is given
reaches the command unchanged, and an option naming the server's own files or limits is refused."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from corral.api import clidoc
from corral.api.cli import build_parser, main
from corral.api.flags import flag_name, has_flag
from corral.pipeline.embed import EmbedConfig
from corral.pipeline.options import from_mapping
from tests.conftest import REPO


def _parse(argv: list[str]) -> EmbedConfig:
    from corral.api.commands.embed_cmd import config_from_args

    return config_from_args(build_parser().parse_args(["embed", "photos", "--workspace", "ws", *argv]))


def test_every_embed_option_is_documented():
    table = clidoc.section((REPO / "docs" / "embed.md").read_text(), clidoc.EMBED_OPTIONS_START, clidoc.EMBED_OPTIONS_END)
    assert table == clidoc.options_table(EmbedConfig), "run `python -m corral.api.clidoc --write`"
    reference = clidoc.readme_section((REPO / "README.md").read_text())
    embed_reference = reference.split("### `corral embed`", 1)[1].split("### ", 1)[0]
    for f in dataclasses.fields(EmbedConfig):
        help_ = f.metadata.get("help", "")
        assert help_ and "\n" not in help_, f"{f.name} has no one-line help"
        row = next((line for line in table.splitlines() if line.startswith(f"| `{f.name}` |")), None)
        assert row is not None and help_ in row, f"{f.name} is missing from the options table of docs/embed.md"
        if f.metadata.get("job"):
            assert f"not from a job: {f.metadata['job']}" in row, f.name
        if has_flag(f):
            line = next((ln for ln in embed_reference.splitlines() if ln.startswith(f"- `{flag_name(f)}`:")), None)
            assert line is not None and len(line) > 20, f"{f.name}: no flag in the CLI reference"
    # the flags `corral embed` had before its options were said once are all still there
    before = "--model --weights --offline --random-weights --device --batch-size --workers --shard-size --dtype --compile --gpu-decode --max-pixels"
    before += " --endpoint-url --name --detector --detector-weights --min-score --min-size --pad --detect-max-side"
    for flag in before.split():
        assert f"- `{flag}`:" in embed_reference, flag


def test_every_option_reaches_the_command_line_and_back():
    """Each option set away from its default survives the trip a job makes: options -> flags -> EmbedConfig."""
    from corral.api.flags import to_args

    changed = EmbedConfig(
        model="pixels:8",
        weights="/w/model.safetensors",
        offline=True,
        random_weights=True,
        device="cpu",
        batch_size=7,
        num_workers=0,
        shard_size=100,
        dtype="float16",
        compile=True,
        gpu_decode=False,
        decode_ahead=False,
        max_pixels=1000,
        endpoint_url="http://127.0.0.1:9000",
        name="-starts with a dash",
        engine="ray",
        ray_address="127.0.0.1:6379",
        ray_actors=3,
        detector="face",
        detector_weights="/w/det.pth",
        min_score=-0.25,
        min_size=12,
        pad=0.5,
        detect_max_side=640,
    )
    for f in dataclasses.fields(EmbedConfig):  # the case above leaves nothing with a flag at its default
        assert not has_flag(f) or getattr(changed, f.name) != f.default, f.name
    assert _parse(to_args(changed)) == changed
    assert _parse(["--gpu-decode", "on"]).gpu_decode is True and _parse(["--gpu-decode", "auto"]).gpu_decode is None
    assert _parse([]) == EmbedConfig() and to_args(EmbedConfig()) == []
    from corral.api.commands.embed_cmd import config_from_args

    assert config_from_args(build_parser().parse_args(["-q", "embed", "photos", "--workspace", "ws"])).progress is False


def test_options_are_frozen_and_checked_when_made():
    cfg = EmbedConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.batch_size = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"pad=2\.5: must be a number from 0 to 2"):
        dataclasses.replace(cfg, pad=2.5)
    assert EmbedConfig(pad=1).pad == 1.0 and isinstance(EmbedConfig(pad=1).pad, float)
    with pytest.raises(TypeError, match="batch_sise"):
        EmbedConfig(batch_sise=8)  # type: ignore[call-arg]


# (Python keyword arguments, `corral embed` flags, HTTP job options) describing one bad value
BAD = [
    (dict(batch_size=0), ["--batch-size", "0"], {"batch_size": 0}),
    (dict(batch_size="abc"), ["--batch-size", "abc"], {"batch_size": "abc"}),
    (dict(shard_size=0), ["--shard-size", "0"], {"shard_size": 0}),
    (dict(dtype="float64"), ["--dtype", "float64"], {"dtype": "float64"}),
    (dict(device="gpu"), ["--device", "gpu"], {"device": "gpu"}),
    (dict(gpu_decode="maybe"), ["--gpu-decode", "maybe"], {"gpu_decode": "maybe"}),
    (dict(model=""), ["--model", ""], {"model": ""}),
    (dict(name="a\tb"), ["--name", "a\tb"], {"name": "a\tb"}),
    (dict(detector=""), ["--detector", ""], {"detector": ""}),
    (dict(min_score="high"), ["--min-score", "high"], {"min_score": "high"}),
    (dict(min_size=0), ["--min-size", "0"], {"min_size": 0}),
    (dict(pad=5.0), ["--pad", "5"], {"pad": 5}),
    (dict(detect_max_side=32), ["--detect-max-side", "32"], {"detect_max_side": 32}),
]


def _python_error(kwargs: dict) -> str:
    with pytest.raises(ValueError) as err:
        EmbedConfig(**kwargs)
    return str(err.value)


@pytest.fixture
def photos_client(curation_ws, tmp_path):
    """A server that may read tmp_path/photos (a real folder of images): only the options can be wrong."""
    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.api.settings import Settings
    from tests.generated import generated_data

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(generated_data("images", "obj05").glob("*.png"))[:4]:
        shutil.copy(p, photos / p.name)
    with TestClient(create_app(Settings(workspace=curation_ws.root, source_roots=[photos]))) as c:
        yield c, photos


@pytest.mark.parametrize("kwargs,argv,options", BAD, ids=[str(b[2]) for b in BAD])
def test_a_bad_value_gets_the_same_words_from_python_the_cli_and_a_job(kwargs, argv, options, photos_client, curation_ws, tmp_path, capsys):
    client, photos = photos_client
    words = _python_error(kwargs)
    assert "=" in words and "must be" in words  # names the parameter, the value and what is allowed
    ws = tmp_path / "cli-ws"
    assert main(["embed", str(photos), "--workspace", str(ws), *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"corral embed: error: {words}"
    assert not ws.exists()  # refused before anything was written
    auth = curation_ws.auth("curator")
    r = client.post("/api/jobs", headers=auth, json={"kind": "embed", "source": str(photos), "options": options})
    assert r.status_code == 422 and r.json()["error"] == words
    assert client.get("/api/jobs", headers=auth).json() == {"jobs": []}  # nothing started


def test_an_embed_job_refuses_unknown_names_and_the_servers_own_options(photos_client, curation_ws):
    client, photos = photos_client
    auth = curation_ws.auth("curator")

    def post(body: dict) -> tuple[int, str]:
        r = client.post("/api/jobs", headers=auth, json={"kind": "embed", "source": str(photos), **body})
        return r.status_code, r.json()["error"]

    code, error = post({"options": {"batch_sise": 8}})
    assert code == 422 and "batch_sise" in error and "did you mean batch_size" in error
    code, error = post({"optons": {"batch_size": 8}})  # a field of the request itself
    assert code == 422 and "optons" in error
    code, error = post({"options": {"weights": "/etc/passwd"}})
    assert code == 422 and error.startswith("options.weights: a job cannot set weights: it names a file on the server")
    for name, value in (("detector_weights", "/etc/passwd"), ("num_workers", 5000), ("max_pixels", 10**12), ("endpoint_url", "http://127.0.0.1:1"), ("progress", False)):
        code, error = post({"options": {name: value}})
        assert code == 422 and f"a job cannot set {name}" in error, (name, error)
    assert client.get("/api/jobs", headers=auth).json() == {"jobs": []}
    # the same misspelling from Python's plain data and from the command line
    with pytest.raises(ValueError, match="did you mean batch_size"):
        from_mapping(EmbedConfig, {"batch_sise": 8}, what="an embed option")
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["embed", "photos", "--workspace", "ws", "--batch-sise", "8"])
    assert exit_.value.code == 2


def test_an_embed_job_hands_its_options_to_the_command_unchanged():
    """What the job's command line parses to is the EmbedConfig the options describe."""
    from corral.api.jobs import JOB_OPTIONS, _embed_args

    options = {"model": "pixels:8", "name": "-starts-with-a-dash", "dtype": "float16", "gpu_decode": True, "decode_ahead": False}
    options |= {"batch_size": 4, "shard_size": 3, "detector": "face", "min_score": 0.5, "min_size": 24, "pad": 0.3, "detect_max_side": 800, "offline": True}
    assert set(options) <= set(JOB_OPTIONS["embed"])
    args = _embed_args(options)
    assert _parse(args) == from_mapping(EmbedConfig, options)


def test_an_embed_job_runs_with_the_options_it_was_given(tmp_path):
    """A real embed job with options beyond the model: the set it writes has the name, vector type,
    model and shards it was asked for."""
    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.api.auth import UserStore
    from corral.api.settings import Settings
    from tests.api.test_jobs import _wait
    from tests.generated import generated_data

    src = tmp_path / "imgs"
    src.mkdir()
    for p in sorted(generated_data("images", "obj05").glob("*.png"))[:5]:
        shutil.copy(p, src / p.name)
    ws = tmp_path / "ws"
    ws.mkdir()
    auth = {"Authorization": f"Bearer {UserStore(ws).add('c', role='curator')}"}
    options = {"model": "pixels:8", "name": "small grey", "dtype": "float16", "shard_size": 2, "batch_size": 2, "device": "cpu"}
    with TestClient(create_app(Settings(workspace=ws, source_roots=[tmp_path]))) as c:
        job = c.post("/api/jobs", headers=auth, json={"kind": "embed", "source": str(src), "options": options})
        assert job.status_code == 202, job.text
        done = _wait(c, auth, job.json()["id"])
    assert done["status"] == "done", done
    assert done["result"]["embedded"] == 5 and done["result"]["model"] == "pixels:8" and done["result"]["dim"] == 64
    es = Path(done["result"]["embeddings"])
    assert es.name == "small_grey"
    side = json.loads((es / "embeddings.json").read_text())
    assert side["dtype"] == "float16" and side["count"] == 5
    assert len(list(es.glob("part-*.items.parquet"))) == 3  # 5 items in shards of 2


def test_a_photo_is_cut_by_the_embed_stages_rules_in_its_words():
    """Recognising the boxes in a new photo takes the embed stage's crop options, checked in the same words."""
    from corral.pipeline.regions import RegionEncoder

    with pytest.raises(ValueError) as err:
        RegionEncoder(detector="face", model="pixels:8", pad=5.0)
    assert str(err.value) == _python_error(dict(pad=5.0))
