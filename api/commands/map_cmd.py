"""``corral map``: project and cluster an embedding set into a map folder."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from corral.api.cli import CliError, emit, register


def _add_map(p: argparse.ArgumentParser) -> None:
    from corral.api.flags import add_option_flags
    from corral.pipeline.mapping import MapConfig

    p.add_argument("--workspace", "-w", required=True, help="workspace folder holding the embeddings")
    p.add_argument("--embeddings", default=None, help="embedding set name (default: the most recent one)")
    p.add_argument(
        "--with-labels",
        action="store_true",
        help=(
            "lay the map out with the labels so far as a partial target (UMAP's semi-supervised mode), so what is left separates; "
            "writes a new map (default name <set>-labels-v<store version>), the old one stays"
        ),
    )
    p.add_argument("--update", action="store_true", help="place items embedded since the map was made onto it, moving no existing point")
    add_option_flags(p, MapConfig)  # every map option, from the one place it is said


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`MapConfig` the flags describe (flags override KEY=VALUE pairs)."""
    from corral.api.flags import options_from_args
    from corral.pipeline.mapping import MapConfig

    return options_from_args(args, MapConfig)


def _run_map(args: argparse.Namespace) -> int:
    from corral.pipeline.mapping import build_map, update_map

    cfg = config_from_args(args)
    if args.update and args.with_labels:
        raise CliError("--update places new items on a map as it is; --with-labels makes a new map: use one of them")
    if args.update:
        res = update_map(workspace=args.workspace, embeddings=args.embeddings, map_name=cfg.name, config=cfg)
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
        if not cfg.name:
            cfg = replace(cfg, name=f"{ws.default_embedding_set(args.embeddings).name}-labels-v{snap.version}")
        res = build_map(workspace=ws, embeddings=args.embeddings, config=cfg, labels=labels)
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
