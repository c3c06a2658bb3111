"""``corral map``: project and cluster an embedding set into a map folder."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
from typing import Any

from corral.api.cli import CliError, emit, register


def _add_map(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", "-w", required=True, help="workspace folder holding the embeddings")
    p.add_argument("--embeddings", default=None, help="embedding set name (default: the most recent one)")
    p.add_argument("--name", default=None, help="map name (default: the embedding set's name)")
    p.add_argument(
        "--with-labels",
        action="store_true",
        help=(
            "lay the map out with the labels so far as a partial target (UMAP's semi-supervised mode), so what is left separates; "
            "writes a new map (default name <set>-labels-v<store version>), the old one stays"
        ),
    )
    p.add_argument("--target-weight", type=float, default=0.5, help="with --with-labels: weight of the labels against the embeddings, 0..1 (default 0.5, umap-learn's)")
    p.add_argument("--update", action="store_true", help="place items embedded since the map was made onto it, moving no existing point")
    p.add_argument("--n-neighbors", type=int, default=None, help="UMAP n_neighbors, also the k of the kNN graph (default 15)")
    p.add_argument("--min-dist", type=float, default=None, help="UMAP min_dist of the 2-D map (default 0.1)")
    p.add_argument("--min-cluster-size", type=int, default=None, help="HDBSCAN min_cluster_size (default: chosen by modularity and silhouette)")
    p.add_argument("--min-samples", type=int, default=None, help="HDBSCAN min_samples (default 10, 5 for the finest candidate cuts)")
    p.add_argument("--cluster-dims", type=int, default=None, help="UMAP dimensions to cluster in; 0 clusters on the 2-D map (default 10 up to 200k items)")
    p.add_argument("--index-factory", default=None, help="FAISS index factory string for the kNN graph, e.g. Flat or HNSW32 (default: by size)")
    p.add_argument("--knn", choices=("auto", "faiss", "torch"), default="auto", help="kNN engine (default auto: torch on a GPU, FAISS on the CPU)")
    p.add_argument("--layout", choices=("auto", "umap", "torch", "cuml"), default="auto", help="layout optimiser (default auto: cuML or torch on a GPU, umap-learn on the CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", default="0", help="random seed (default 0); 'none' runs umap-learn in parallel, not reproducibly")
    p.add_argument("--keep-noise", action="store_true", help="leave HDBSCAN's noise as cluster -1 instead of handing it to the nearest cluster")
    p.add_argument("--umap", action="append", default=[], metavar="KEY=VALUE", help="any UMAP parameter by umap-learn's name, e.g. --umap spread=1.5 (repeatable)")
    p.add_argument("--hdbscan", action="append", default=[], metavar="KEY=VALUE", help="any HDBSCAN parameter by its name, e.g. --hdbscan cluster_selection_method=leaf")
    p.add_argument("--faiss", action="append", default=[], metavar="KEY=VALUE", help="FAISS settings: index_factory, nprobe, efSearch, efConstruction")


def _coerce(raw: str, current: Any, annotation: str) -> Any:
    text = raw.strip()
    if text.lower() in ("none", "null", ""):
        if "None" not in annotation:
            raise CliError(f"{text!r} is not allowed here")
        return None
    if isinstance(current, bool) or annotation.startswith("bool"):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise CliError(f"{text!r} is not true or false")
    if annotation.startswith("int") or isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise CliError(f"{text!r} is not an integer") from None
    if annotation.startswith("float") or isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise CliError(f"{text!r} is not a number") from None
    return text


def apply_pairs(obj: Any, pairs: list[str], *, what: str) -> None:
    """Set dataclass fields of ``obj`` from ``KEY=VALUE`` strings; unknown keys list close names."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for pair in pairs:
        if "=" not in pair:
            raise CliError(f"--{what} {pair!r}: expected KEY=VALUE")
        key, value = pair.split("=", 1)
        key = key.strip()
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(fields))}"
            raise CliError(f"--{what} {key}: not a {what} setting here{hint}")
        try:
            setattr(obj, key, _coerce(value, getattr(obj, key), str(fields[key].type)))
        except CliError as e:
            raise CliError(f"--{what} {key}={value}: {e}") from None


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`MapConfig` the flags describe (flags override KEY=VALUE pairs)."""
    from corral.pipeline.mapping import MapConfig

    cfg = MapConfig()
    apply_pairs(cfg.umap, args.umap, what="umap")
    apply_pairs(cfg.hdbscan, args.hdbscan, what="hdbscan")
    apply_pairs(cfg.faiss, args.faiss, what="faiss")
    if args.n_neighbors is not None:
        cfg.umap.n_neighbors = args.n_neighbors
    if args.min_dist is not None:
        cfg.umap.min_dist = args.min_dist
    if args.min_cluster_size is not None:
        cfg.hdbscan.min_cluster_size = args.min_cluster_size
    if args.min_samples is not None:
        cfg.hdbscan.min_samples = args.min_samples
    if args.index_factory is not None:
        cfg.faiss.index_factory = args.index_factory
    cfg.cluster_dims = args.cluster_dims
    cfg.knn, cfg.layout, cfg.device = args.knn, args.layout, args.device
    seed = str(args.seed).strip().lower()
    if seed in ("none", "null", ""):
        cfg.seed = None
    else:
        try:
            cfg.seed = int(seed)
        except ValueError:
            raise CliError(f"--seed {args.seed!r}: expected a non-negative integer or 'none'") from None
    cfg.assign_noise = not args.keep_noise
    cfg.name = args.name
    cfg.validate()
    return cfg


def _run_map(args: argparse.Namespace) -> int:
    from corral.pipeline.mapping import build_map, update_map

    cfg = config_from_args(args)
    if args.update and args.with_labels:
        raise CliError("--update places new items on a map as it is; --with-labels makes a new map: use one of them")
    if args.update:
        res = update_map(workspace=args.workspace, embeddings=args.embeddings, map_name=args.name, config=cfg)
    elif args.with_labels:
        from dataclasses import replace

        from corral.storage.labels import LabelStore
        from corral.storage.workspace import Workspace

        ws = Workspace(args.workspace)
        with LabelStore.open(ws) as store:
            snap = store.snapshot()
        labels = {i: v[0] for i, v in snap.items.items()}
        if len({*labels.values()}) < 2:
            raise CliError(f"--with-labels needs at least 2 labels to lay the map out by; the store has {len({*labels.values()})}")
        if not args.name:
            cfg = replace(cfg, name=f"{ws.default_embedding_set(args.embeddings).name}-labels-v{snap.version}")
        res = build_map(workspace=ws, embeddings=args.embeddings, config=cfg, labels=labels, target_weight=args.target_weight)
    else:
        res = build_map(workspace=args.workspace, embeddings=args.embeddings, config=cfg)
    if not args.quiet:
        s = res.seconds
        what = f"placed {res.new} new items on" if args.update else "made"
        skipped = f"; left out {json.dumps(res.skipped)}" if res.skipped else ""
        sys.stderr.write(
            f"{what} map {res.name}: {res.points} points, {res.clusters} clusters, {100 * res.noise_fraction:.1f}% noise{skipped}\n"
            f"  kNN {s.get('knn', 0):.1f}s, UMAP {s.get('umap', 0):.1f}s, clustering {s.get('cluster', 0):.1f}s; folder {res.path}\n"
        )
    emit(res.summary())
    return 0


register("map", "project and cluster an embedding set into a 2-D map (kNN graph, UMAP, HDBSCAN)", _add_map, _run_map)
