"""The fused attention kernel's tiled loop, block by block (plain Python, slow on purpose).

It walks every (query block, key block) pair of one product and decides from the positions of the
block's own scores whether the kernel computes it (some score is visible), and whether the mask must be
applied there (some score is hidden): it never uses the per-row formulas of
``simulator/engine/attention.py``, which must agree with its counts. It also runs the online softmax on
real numbers, so the tests can check that the blocks it keeps give the exact attention output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class TiledCounts:
    """What one product's tiled loop does, in elements (per product: multiply by the products)."""

    blocks: int = 0  # (query block, key block) pairs computed
    scores: int = 0  # query rows (group x queries) x keys of the computed blocks
    masked_scores: int = 0  # scores of the computed blocks the mask cuts
    key_reads: int = 0  # keys fetched, once per query block that computes their block
    rescales: int = 0  # online-softmax vector work beyond the per-score passes
    chunks: int = 0


def visible(query: int, key: int, causal: bool, window: int) -> bool:
    """Whether the query at key position ``query`` sees the key at ``key``."""
    if not causal:
        return True
    return key <= query and (not window or key > query - window)


def tiled_counts(queries: int, keys: int, group: int, head_dim: int, causal: bool, window: int, block_q: int,
                 block_k: int, splits: int = 1) -> TiledCounts:
    """Counts of one product's tiled loop (``splits`` > 1: the one query block's key blocks dealt into that
    many chunks of whole blocks, each its own running softmax, combined at the end)."""
    counts = TiledCounts()
    offset = keys - queries
    width = head_dim + 2
    for q0 in range(0, queries, block_q):
        q_rows = range(q0, min(queries, q0 + block_q))
        kept: list[range] = []
        for k0 in range(0, keys, block_k):
            k_cols = range(k0, min(keys, k0 + block_k))
            seen = [visible(offset + q, k, causal, window) for q in q_rows for k in k_cols]
            if any(seen):
                kept.append(k_cols)
                counts.blocks += 1
                counts.scores += group * len(seen)
                counts.key_reads += len(k_cols)
                if not all(seen):
                    counts.masked_scores += group * len(seen)
        per_chunk = math.ceil(len(kept) / splits) if splits > 1 else len(kept)
        chunks = [kept[i:i + per_chunk] for i in range(0, len(kept), per_chunk)] if kept else []
        counts.chunks += len(chunks)
        rows = group * len(q_rows)
        for chunk in chunks:
            counts.rescales += rows * width * (len(chunk) - 1)  # every key block after the chunk's first
        if splits > 1:
            counts.rescales += rows * width * (len(chunks) - 1)  # combining the chunks
        counts.rescales += rows * head_dim  # the division by the row sums
    return counts


def tiled_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool, window: int, block_q: int,
                    block_k: int) -> np.ndarray:
    """The attention output of one head (q: queries x d, k and v: keys x d) computed block by block with an
    online softmax, skipping the blocks with no visible score: equal to softmax(q k^T / sqrt d) v under the
    mask."""
    queries, keys = q.shape[0], k.shape[0]
    offset, scale = keys - queries, 1.0 / math.sqrt(q.shape[1])
    out = np.zeros_like(q, dtype=np.float64)
    for q0 in range(0, queries, block_q):
        rows = range(q0, min(queries, q0 + block_q))
        running_max = np.full(len(rows), -np.inf)
        running_sum = np.zeros(len(rows))
        acc = np.zeros((len(rows), v.shape[1]))
        for k0 in range(0, keys, block_k):
            cols = range(k0, min(keys, k0 + block_k))
            mask = np.array([[visible(offset + r, c, causal, window) for c in cols] for r in rows])
            if not mask.any():
                continue
            scores = np.where(mask, q[rows.start:rows.stop] @ k[cols.start:cols.stop].T * scale, -np.inf)
            new_max = np.maximum(running_max, scores.max(axis=1))
            shift = np.where(np.isfinite(new_max), new_max, 0.0)  # a row that has seen nothing yet
            correction = np.exp(running_max - shift)
            weights = np.exp(scores - shift[:, None])
            running_sum = running_sum * correction + weights.sum(axis=1)
            acc = acc * correction[:, None] + weights @ v[cols.start:cols.stop]
            running_max = new_max
        out[rows.start:rows.stop] = acc / running_sum[:, None]
    return out
