"""Items that appear while the server runs (the viewer's own embed and map jobs) can be labelled at
once: the label store learns the ids of every new item shard and map, without a restart."""

from __future__ import annotations

import numpy as np

from corral.storage.labels import LabelStore
from corral.storage.maps import clusters_table, points_table, write_map
from corral.storage.workspace import Workspace, atomic_write_json, atomic_write_table, embedding_table, items_table


def _embed_late(root, ids: list[str]) -> None:
    """What an embed run that finishes while the server runs leaves behind: a new embedding set."""
    es = Workspace(root).embedding_set("late")
    es.path.mkdir(parents=True, exist_ok=True)
    vecs = np.random.default_rng(1).normal(size=(len(ids), 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    atomic_write_json(es.sidecar_path, {"model": "test", "dim": 8, "dtype": "float32", "count": len(ids)})
    emb_path, items_path = es.shard_paths(0)
    atomic_write_table(emb_path, embedding_table(ids, vecs))
    rows = [{"id": i, "uri": f"/nowhere/{i}.png", "status": "ok", "width": 32, "height": 32, "bytes": 100} for i in ids]
    atomic_write_table(items_path, items_table(rows))


def _map_late(root, ids: list[str]) -> None:
    """What a map run leaves behind: a map of those items."""
    n = len(ids)
    write_map(
        Workspace(root).map_dir("late"),
        points=points_table(ids=ids, xy=np.random.default_rng(2).random((n, 2)), cluster=np.zeros(n), probability=np.ones(n), outlier_score=np.zeros(n), is_new=np.ones(n, bool)),
        clusters=clusters_table(cluster=np.array([0]), size=np.array([n]), exemplars=[ids[:3]], cohesion=np.array([1.0])),
        meta={"created_at": "2026-02-01T00:00:00Z", "embeddings": "late", "model": "test"},
    )


def test_items_embedded_and_mapped_while_the_server_runs_can_be_labelled(client, curation_ws):
    auth = curation_ws.auth("curator")
    # the server has its label store open before the new items exist
    assert client.post("/api/maps/main/actions/assign", headers=auth, json={"indices": [0], "label": "old"}).status_code == 200
    embedded = [f"late{i:028x}" for i in range(20)]
    only_on_map = [f"mapped{i:026x}" for i in range(5)]  # a map may hold ids no items shard lists
    _embed_late(curation_ws.root, embedded)
    _map_late(curation_ws.root, embedded + only_on_map)

    r = client.post("/api/maps/late/actions/assign", headers=auth, json={"indices": list(range(25)), "label": "new"})
    assert r.status_code == 200, r.text
    assert r.json()["changed_items"] == 25
    assert client.get(f"/api/items/{embedded[0]}", headers=auth).status_code == 200
    with LabelStore.open(Workspace(curation_ws.root)) as store:  # durable, and seen by another process
        labels = store.item_labels()
    assert all(labels.get(i) == "new" for i in embedded + only_on_map)


def test_an_open_store_learns_new_shards_incrementally(curation_ws):
    store = LabelStore.open(Workspace(curation_ws.root))
    try:
        before = store.known_items()
        assert store.sync_workspace(Workspace(curation_ws.root)) == 0  # nothing changed: nothing to do
        _embed_late(curation_ws.root, [f"late{i:028x}" for i in range(7)])
        assert store.sync_workspace(Workspace(curation_ws.root)) == 7
        assert store.known_items() == before + 7
        assert store.sync_workspace(Workspace(curation_ws.root)) == 0
    finally:
        store.close()
