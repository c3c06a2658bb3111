"""UMAP's layout objective optimised with torch, for GPUs.

umap-learn walks the edges of its fuzzy graph one at a time on the CPU. Here every epoch takes
all the edges due in that epoch at once: each edge of weight ``w`` is due with probability
``w / max(w)`` (umap-learn samples it every ``max(w) / w`` epochs), pulls its two ends together,
and pushes its head away from ``negative_sample_rate`` random points; the summed, clipped
gradients move every point together. The gradients, their clipping to [-4, 4] and the linearly
decaying learning rate are umap-learn's. On a GPU an epoch over tens of millions of edges takes
milliseconds, which makes the layout of a 1M-item map a matter of seconds.

It also runs on the CPU (how the tests exercise it), though umap-learn is the better choice there.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def optimize_layout(
    graph: Any,
    start: np.ndarray,
    *,
    a: float,
    b: float,
    n_epochs: int,
    learning_rate: float = 1.0,
    repulsion_strength: float = 1.0,
    negative_sample_rate: int = 5,
    seed: int | None = 0,
    device: str = "cuda",
    edge_chunk: int = 1 << 24,
) -> np.ndarray:
    """Optimise ``start`` ``[n, d]`` under UMAP's cross-entropy on ``graph`` (scipy sparse).

    Returns the layout as float32 ``[n, d]``. ``edge_chunk`` bounds the edges handled in one
    batch (memory); results do not depend on it beyond floating-point order.
    """
    import torch

    g = graph.tocoo()
    n = g.shape[0]
    w = np.asarray(g.data, np.float64)
    if w.size == 0 or n < 2:
        return np.asarray(start, np.float32)
    # Like umap-learn: edges too weak to be sampled even once are dropped.
    keep = w >= w.max() / float(n_epochs)
    head_np, tail_np, w = g.row[keep], g.col[keep], w[keep]
    dev = torch.device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(0 if seed is None else int(seed))
    head = torch.from_numpy(head_np.astype(np.int64)).to(dev)
    tail = torch.from_numpy(tail_np.astype(np.int64)).to(dev)
    prob = torch.from_numpy((w / w.max()).astype(np.float32)).to(dev)
    y = torch.from_numpy(np.ascontiguousarray(start, np.float32)).to(dev)
    a_t, b_t = float(a), float(b)
    gamma = float(repulsion_strength)
    neg = int(negative_sample_rate)
    n_edges = head.shape[0]
    with torch.inference_mode():
        for epoch in range(int(n_epochs)):
            alpha = float(learning_rate) * (1.0 - epoch / float(n_epochs))
            delta = torch.zeros_like(y)
            for s in range(0, n_edges, edge_chunk):
                e = slice(s, min(s + edge_chunk, n_edges))
                due = torch.rand(prob[e].shape[0], device=dev, generator=gen) < prob[e]
                h, t = head[e][due], tail[e][due]
                if h.numel() == 0:
                    continue
                _attract(y, delta, h, t, a_t, b_t)
                hr = h.repeat_interleave(neg) if neg > 1 else h
                others = torch.randint(0, n, (hr.shape[0],), device=dev, generator=gen)
                _repel(y, delta, hr, others, a_t, b_t, gamma)
            y.add_(delta, alpha=alpha)
    return y.float().cpu().numpy()


def _attract(y, delta, h, t, a: float, b: float) -> None:
    diff = y[h] - y[t]
    d2 = (diff * diff).sum(1, keepdim=True)
    coef = (-2.0 * a * b * d2.clamp_min(1e-12).pow(b - 1.0)) / (a * d2.pow(b) + 1.0)
    coef = coef.masked_fill(d2 <= 0, 0.0)
    grad = (coef * diff).clamp_(-4.0, 4.0)
    delta.index_add_(0, h, grad)
    delta.index_add_(0, t, -grad)


def _repel(y, delta, h, o, a: float, b: float, gamma: float) -> None:
    diff = y[h] - y[o]
    d2 = (diff * diff).sum(1, keepdim=True)
    coef = (2.0 * gamma * b) / ((0.001 + d2) * (a * d2.pow(b) + 1.0))
    coef = coef.masked_fill((d2 <= 0) | (h == o).unsqueeze(1), 0.0)
    grad = (coef * diff).clamp_(-4.0, 4.0)
    delta.index_add_(0, h, grad)
