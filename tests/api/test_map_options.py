"""The map's options are said once (MapConfig): documented, and a bad value gets the same words from
Python, `corral map` and an HTTP map job; what the job is given reaches the command unchanged."""

from __future__ import annotations

import dataclasses

import pytest

from corral.api import clidoc
from corral.api.cli import build_parser, main
from corral.api.flags import flag_name
from corral.pipeline.cluster import HdbscanParams
from corral.pipeline.knn import FaissParams
from corral.pipeline.mapping import MapConfig
from corral.pipeline.options import is_group
from corral.pipeline.project import UmapParams
from tests.conftest import REPO


def _all_fields() -> list[tuple[str, dataclasses.Field]]:
    out = []
    for f in dataclasses.fields(MapConfig):
        if is_group(f):
            out += [(f"{f.name}.{g.name}", g) for g in dataclasses.fields(f.default_factory)]
        else:
            out.append((f.name, f))
    return out


def test_every_map_option_is_documented():
    docs = (REPO / "docs" / "map.md").read_text()
    readme = (REPO / "README.md").read_text()
    table = clidoc.section(docs, clidoc.OPTIONS_START, clidoc.OPTIONS_END)
    assert table == clidoc.options_table(), "run `python -m corral.api.clidoc --write`"
    reference = clidoc.readme_section(readme)
    map_reference = reference.split("### `corral map`", 1)[1].split("### ", 1)[0]
    for path, f in _all_fields():
        help_ = f.metadata.get("help", "")
        assert help_ and "\n" not in help_, f"{path} has no one-line help"
        row = next((line for line in table.splitlines() if line.startswith(f"| `{path}` |")), None)
        assert row is not None, f"{path} is missing from the options table of docs/map.md"
        assert help_ in row
        # in the CLI reference: its own flag, or a key of its group's --GROUP KEY=VALUE flag
        if "." in path:
            grp, name = path.split(".")
            line = next(ln for ln in map_reference.splitlines() if ln.startswith(f"- `--{grp}`:"))
            assert name in line.split("repeatable:", 1)[1].strip().split(", "), path
        else:
            line = next((ln for ln in map_reference.splitlines() if ln.startswith(f"- `{flag_name(f)}`:")), None)
            assert line is not None and len(line) > 20, f"{path}: no flag in the CLI reference"


def _parse(argv: list[str]) -> MapConfig:
    from corral.api.commands.map_cmd import config_from_args

    return config_from_args(build_parser().parse_args(["map", "--workspace", "ws", *argv]))


def test_every_option_reaches_the_command_line_and_back():
    """Each option set away from its default survives the trip a job makes: options -> flags -> MapConfig."""
    from corral.api.flags import to_args

    changed = MapConfig(
        name="other map",
        umap=UmapParams(
            n_neighbors=30, min_dist=0.25, spread=1.5, n_epochs=40, learning_rate=0.5, init="pca", set_op_mix_ratio=0.5, local_connectivity=2.0, repulsion_strength=0.5, negative_sample_rate=3
        ),
        hdbscan=HdbscanParams(min_cluster_size=12, min_samples=4, cluster_selection_method="leaf", cluster_selection_epsilon=0.1, allow_single_cluster=True),
        faiss=FaissParams(index_factory="IVF64,Flat", nprobe=8, efSearch=64, efConstruction=40),
        cluster_dims=0,
        knn="faiss",
        layout="umap",
        device="cpu",
        seed=None,
        assign_noise=False,
        exemplars=3,
        target_weight=0.8,
    )
    for path, f in _all_fields():  # the case above leaves nothing at its default
        obj = getattr(changed, path.split(".")[0]) if "." in path else changed
        assert getattr(obj, f.name) != f.default, path
    assert _parse(to_args(changed)) == changed
    assert _parse([]) == MapConfig() and to_args(MapConfig()) == []


def test_flags_override_key_value_pairs_and_misspellings_are_named():
    cfg = _parse(["--umap", "n_neighbors=20", "--n-neighbors", "25", "--umap", "n_epochs=none", "--hdbscan", "allow_single_cluster=yes", "--seed", "none"])
    assert cfg.umap.n_neighbors == 25 and cfg.umap.n_epochs is None and cfg.hdbscan.allow_single_cluster is True and cfg.seed is None
    with pytest.raises(ValueError, match="did you mean n_neighbors"):
        _parse(["--umap", "n_neigbors=5"])


def test_options_are_frozen_and_checked_when_made():
    cfg = MapConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"umap min_dist=2\.0: must be between 0 and spread \(1\.0\)"):
        dataclasses.replace(cfg, umap=dataclasses.replace(cfg.umap, min_dist=2.0))
    assert MapConfig(target_weight=1).target_weight == 1.0 and isinstance(MapConfig(target_weight=1).target_weight, float)


# (Python keyword arguments, `corral map` flags, HTTP job options) describing one bad value
BAD = [
    (dict(umap=dict(n_neighbors=1)), ["--n-neighbors", "1"], {"umap": {"n_neighbors": 1}}),
    (dict(umap=dict(n_neighbors="abc")), ["--umap", "n_neighbors=abc"], {"umap": {"n_neighbors": "abc"}}),
    (dict(umap=dict(init="umap")), ["--umap", "init=umap"], {"umap": {"init": "umap"}}),
    (dict(hdbscan=dict(min_cluster_size=1)), ["--min-cluster-size", "1"], {"hdbscan": {"min_cluster_size": 1}}),
    (dict(hdbscan=dict(cluster_selection_method="best")), ["--hdbscan", "cluster_selection_method=best"], {"hdbscan": {"cluster_selection_method": "best"}}),
    (dict(faiss=dict(nprobe=0)), ["--faiss", "nprobe=0"], {"faiss": {"nprobe": 0}}),
    (dict(seed=-1), ["--seed", "-1"], {"seed": -1}),
    (dict(cluster_dims=65), ["--cluster-dims", "65"], {"cluster_dims": 65}),
    (dict(device="gpu"), ["--device", "gpu"], {"device": "gpu"}),
    (dict(target_weight=2.0), ["--target-weight", "2"], {"target_weight": 2}),
    (dict(exemplars=0), ["--exemplars", "0"], {"exemplars": 0}),
    (dict(name="a\tb"), ["--name", "a\tb"], {"name": "a\tb"}),
]


def _python_error(kwargs: dict) -> str:
    groups = {"umap": UmapParams, "hdbscan": HdbscanParams, "faiss": FaissParams}
    with pytest.raises(ValueError) as err:
        MapConfig(**{k: groups[k](**v) if k in groups else v for k, v in kwargs.items()})
    return str(err.value)


@pytest.mark.parametrize("kwargs,argv,options", BAD, ids=[str(b[2]) for b in BAD])
def test_a_bad_value_gets_the_same_words_from_python_the_cli_and_a_job(kwargs, argv, options, client, curation_ws, capsys):
    words = _python_error(kwargs)
    assert "=" in words and "must be" in words  # names the parameter, the value and what is allowed
    assert main(["map", "--workspace", str(curation_ws.root), *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"corral map: error: {words}"
    r = client.post("/api/jobs", headers=curation_ws.auth("curator"), json={"kind": "map", "options": options})
    assert r.status_code == 422 and r.json()["error"] == words
    assert client.get("/api/jobs", headers=curation_ws.auth("curator")).json() == {"jobs": []}  # nothing started


def test_a_map_job_refuses_unknown_names_at_every_level(client, curation_ws):
    auth = curation_ws.auth("curator")
    r = client.post("/api/jobs", headers=auth, json={"kind": "map", "options": {"umap": {"n_neigbors": 30}}})
    assert r.status_code == 422 and "'n_neigbors' is not a UMAP setting" in r.json()["error"] and "did you mean n_neighbors" in r.json()["error"]
    r = client.post("/api/jobs", headers=auth, json={"kind": "map", "options": {"seeed": 1}})
    assert r.status_code == 422 and "seeed" in r.json()["error"] and "did you mean seed" in r.json()["error"]
    r = client.post("/api/jobs", headers=auth, json={"kind": "map", "optons": {"seed": 1}})  # a field of the request itself
    assert r.status_code == 422 and "optons" in r.json()["error"]
    r = client.post("/api/jobs", headers=auth, json={"kind": "map", "options": {"umap": 30}})
    assert r.status_code == 422 and "umap=30" in r.json()["error"]
    r = client.post("/api/jobs", headers=auth, json={"kind": "map", "options": {"update": True, "with_labels": True}})
    assert r.status_code == 422 and "use one of them" in r.json()["error"]
    assert client.get("/api/jobs", headers=auth).json() == {"jobs": []}


def test_a_map_job_hands_its_options_to_the_command_unchanged():
    """What the job's command line parses to is the MapConfig the options describe."""
    from corral.api.jobs import _map_args
    from corral.pipeline.options import from_mapping

    options = {"name": "-starts-with-a-dash", "umap": {"n_neighbors": 30, "spread": 1.5}, "hdbscan": {"cluster_selection_method": "leaf"}, "faiss": {"efSearch": 64}}
    options |= {"seed": None, "assign_noise": False, "target_weight": 0.75}
    args = _map_args({"embeddings": "set-a", **options})
    parsed = build_parser().parse_args(["map", "--workspace", "ws", *args])
    from corral.api.commands.map_cmd import config_from_args

    assert config_from_args(parsed) == from_mapping(MapConfig, options)
    assert parsed.embeddings == "set-a" and not parsed.update
