"""The cluster hierarchy of a map: HDBSCAN's condensed cluster tree, kept with the map.

Over-splitting is cheap for a curator only when two halves of one class can be joined in one
step. HDBSCAN already knows which clusters belong together: its condensed tree records, for every
cluster it considered (every node of at least ``min_cluster_size`` items), the node it split off
from. The map's flat clusters are a cut through that tree; this module keeps the tree so the
viewer can step a selected cluster up to its parent, down to its children, or across to its
siblings.

The tree is stored as a few flat arrays (``hierarchy.npz`` beside the map, see
:mod:`corral.storage.maps`), nodes numbered ``0..m-1`` with the root ``0`` and every child
numbered after its parent:

``node_parent``  int32 ``[m]``  the parent node, ``-1`` for the root
``node_size``    int32 ``[m]``  items in the node when it splits off its parent
``node_lambda``  float32 ``[m]`` the density level (1 / distance) at which it splits off (root 0)
``node_cluster`` int32 ``[m]``  the flat cluster the node is, ``-1`` for nodes that are not one
``cluster_node`` int32 ``[k]``  flat cluster -> its node
``point_node``   int32 ``[n]``  per map row: the node the item leaves the tree from (``-1``: the
                                item was placed on the map later, or HDBSCAN never joined it)

A node's items (:func:`node_members`) are the items that leave the tree inside the node's subtree,
plus every item of a flat cluster inside it. The second part adds the noise items that were handed
to a cluster, so a flat cluster's node holds exactly that cluster's items, and stepping up and down
again returns to the selection one started from. Only nodes of at least ``min_cluster_size`` items
exist, so ``m`` is at most ``n / min_cluster_size`` or so.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ARRAYS = ("node_parent", "node_size", "node_lambda", "node_cluster", "cluster_node", "point_node")


def empty_hierarchy() -> dict[str, np.ndarray]:
    """A hierarchy without nodes: the map has flat clusters only."""
    return {}


def condensed_hierarchy(tree: Any, n: int, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The hierarchy arrays (see the module docstring) of a condensed tree.

    ``tree`` is fast_hdbscan's condensed tree (``parent``, ``child``, ``lambda_val``,
    ``child_size``; cluster nodes numbered from ``n``, the root ``n``); ``labels`` are the flat
    clusters of the ``n`` items before noise was handed out (``-1`` = noise), numbered as the map
    numbers them. Returns an empty dict when the tree has no clusters.
    """
    parent = np.asarray(tree.parent, np.int64)
    child = np.asarray(tree.child, np.int64)
    lam = np.asarray(tree.lambda_val, np.float64)
    csize = np.asarray(tree.child_size, np.float64)
    labels = np.asarray(labels, np.int64)
    if parent.size == 0 or labels.size != n:
        return empty_hierarchy()
    root = int(parent.min())
    m = int(max(parent.max(), child.max(initial=root))) + 1 - root
    is_node = child >= n
    node_parent = np.full(m, -1, np.int32)
    node_size = np.zeros(m, np.int32)
    node_lambda = np.zeros(m, np.float32)
    node_parent[child[is_node] - root] = parent[is_node] - root
    node_size[child[is_node] - root] = np.rint(csize[is_node]).astype(np.int32)
    node_size[0] = n
    finite = np.where(np.isfinite(lam), lam, 0.0)
    node_lambda[child[is_node] - root] = finite[is_node]
    if np.any(node_parent[1:] >= np.arange(1, m)):
        logger.warning("condensed tree numbers a child before its parent; the map keeps no hierarchy")
        return empty_hierarchy()
    pts = ~is_node
    point_node = np.full(n, -1, np.int32)
    point_node[child[pts]] = parent[pts] - root
    k = int(labels.max()) + 1 if labels.size else 0
    depth = node_depths(node_parent)
    cluster_node = np.full(k, -1, np.int32)
    # (cluster, node) pairs once, sorted: one pass instead of a scan of every item per cluster
    both = (labels >= 0) & (point_node >= 0)
    pairs = np.unique(labels[both] * m + point_node[both])
    cl, nd = pairs // m, pairs % m
    starts = np.flatnonzero(np.r_[True, cl[1:] != cl[:-1]]) if pairs.size else np.empty(0, np.int64)
    for a, b in zip(starts.tolist(), np.r_[starts[1:], pairs.size].tolist()):
        cluster_node[cl[a]] = _common_ancestor(nd[a:b], node_parent, depth)
    node_cluster = np.full(m, -1, np.int32)
    ok = cluster_node >= 0
    node_cluster[cluster_node[ok]] = np.flatnonzero(ok).astype(np.int32)
    return {
        "node_parent": node_parent,
        "node_size": node_size,
        "node_lambda": node_lambda,
        "node_cluster": node_cluster,
        "cluster_node": cluster_node,
        "point_node": point_node,
    }


def node_depths(node_parent: np.ndarray) -> np.ndarray:
    """Depth of every node (root 0); children are numbered after their parents."""
    depth = np.zeros(node_parent.size, np.int32)
    for v in range(1, node_parent.size):
        depth[v] = depth[node_parent[v]] + 1
    return depth


def _common_ancestor(nodes: np.ndarray, node_parent: np.ndarray, depth: np.ndarray) -> int:
    """The deepest node whose subtree holds all of ``nodes``."""
    a = int(nodes[0])
    for b in nodes[1:].tolist():
        while depth[b] > depth[a]:
            b = int(node_parent[b])
        while depth[a] > depth[b]:
            a = int(node_parent[a])
        while a != b:
            a, b = int(node_parent[a]), int(node_parent[b])
    return a


def subtree_mask(node_parent: np.ndarray, node: int) -> np.ndarray:
    """``[m]`` bool: the node and every node below it."""
    m = node_parent.size
    if not 0 <= node < m:
        raise ValueError(f"node {node}: the hierarchy has nodes 0..{m - 1}")
    mask = np.zeros(m, bool)
    mask[node] = True
    for v in range(node + 1, m):
        mask[v] = mask[node_parent[v]]
    return mask


def node_members(h: dict[str, np.ndarray], node: int, clusters: np.ndarray) -> np.ndarray:
    """Rows of the items in ``node`` (see the module docstring), ascending.

    ``clusters`` are the map's final flat clusters per row (``-1`` = noise); rows past the end of
    ``point_node`` (items placed on the map later) count through their cluster only.
    """
    sub = subtree_mask(h["node_parent"], node)
    clusters = np.asarray(clusters, np.int64)
    pn = np.full(clusters.size, -1, np.int64)
    known = min(clusters.size, h["point_node"].size)
    pn[:known] = h["point_node"][:known]
    inside = (pn >= 0) & sub[np.maximum(pn, 0)]
    cn = np.asarray(h["cluster_node"], np.int64)
    flat_inside = (cn >= 0) & sub[np.maximum(cn, 0)]
    in_flat = (clusters >= 0) & (clusters < cn.size)
    inside |= in_flat & flat_inside[np.where(in_flat, clusters, 0)]
    return np.flatnonzero(inside)


def children(h: dict[str, np.ndarray], node: int) -> np.ndarray:
    """The nodes that split off ``node``, ascending."""
    return np.flatnonzero(h["node_parent"] == node)


__all__ = ["ARRAYS", "condensed_hierarchy", "node_members", "children", "subtree_mask", "node_depths", "empty_hierarchy"]
