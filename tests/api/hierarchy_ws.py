"""A curation workspace whose map keeps a cluster hierarchy with known nesting.

The ``curation_ws`` items (48 real images of four objects plus synthetic points) laid out as four
blobs in two pairs far apart, clustered by HDBSCAN's leaf cut into the four blobs; the map is
written with its condensed tree, as ``corral map`` writes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.api.conftest import Curation, build_curation_ws

#: blobs 0+1 and 2+3 are pairs (objects obj01..obj04 lie in blobs 0..3)
CENTRES = np.array([(0.0, 0.0), (3.0, 0.0), (30.0, 0.0), (33.0, 0.0)])


def nested_curation_ws(root: Path, *, extra_points: int = 552, seed: int = 0) -> tuple[Curation, np.ndarray]:
    """The workspace and, per map row, the blob it was generated in."""
    from corral.pipeline.cluster import HdbscanParams, cluster_points
    from corral.storage.maps import clusters_table, points_table, read_map, write_map

    cur = build_curation_ws(root, extra_points=extra_points, seed=seed)
    old = read_map(cur.root, "main")
    ids = old.points.column("id").to_pylist()
    n = len(ids)
    blob = np.arange(n) % 4
    blob[: len(cur.classes)] = [int(c[-2:]) - 1 for c in cur.classes]
    rng = np.random.default_rng(seed)
    xy = (CENTRES[blob] + rng.normal(0, 0.45, (n, 2))).astype(np.float32)
    clu = cluster_points(xy, params=HdbscanParams(min_cluster_size=40, min_samples=10, cluster_selection_method="leaf"), assign_noise=True)
    k = clu.n_clusters
    write_map(
        old.path,
        points=points_table(ids=ids, xy=xy, cluster=clu.labels, probability=clu.probabilities, outlier_score=clu.outlier_scores, is_new=np.zeros(n, bool)),
        clusters=clusters_table(
            cluster=np.arange(k), size=np.bincount(clu.labels, minlength=k), exemplars=[[ids[j] for j in np.flatnonzero(clu.labels == c)[:3]] for c in range(k)], cohesion=np.full(k, 0.5)
        ),
        meta={"created_at": "2026-01-02T00:00:00Z", "embeddings": "test", "model": "test", "counts": {"points": n, "clusters": k}},
        state=clu.state,
        hierarchy=clu.hierarchy,
    )
    return cur, blob
