"""Unstructured zero-skipping from a real 0/1 weight mask (K x N), and mask generators.

Zero-skipping PEs consume only the non-zero weights of their lane (a column of the weight matrix,
i.e. one output channel). Lanes that move in lock-step wait for the slowest one:

- ws: the C lanes of one column tile share their K folds, so the tile needs
  ceil(max non-zeros in the tile / pack) rows of reduction depth;
- os: the C lanes of one column tile stream K together, so a fold streams that same maximum;
- is: all N weight columns are streamed through one K mapping, so the depth is the maximum over
  every column.

With an all-ones mask this gives the dense cycles; with an N:M mask (M dividing K) the structured
cycles. All-zero tiles are skipped. ``masked_cycles`` is the Numba kernel,
``masked_cycles_reference`` the plain-Python version it is tested against.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simulator.timing import DATAFLOWS, ceil_div

_DATAFLOW_CODES = {name: code for code, name in enumerate(DATAFLOWS)}  # ws=0, os=1, is=2


@njit(cache=True)
def _column_nonzeros(mask: np.ndarray) -> np.ndarray:
    k, n = mask.shape
    counts = np.zeros(n, dtype=np.int64)
    for row in range(k):
        for col in range(n):
            if mask[row, col]:
                counts[col] += 1
    return counts


@njit(cache=True)
def _cycles_from_counts(counts: np.ndarray, m: int, rows: int, cols: int, dataflow: int, pack: int,
                        scalesim: bool) -> tuple[int, int, int]:
    """(compute cycles, folds, useful MACs) from per-column non-zero counts."""
    n = counts.shape[0]
    cycles = np.int64(0)
    folds = np.int64(0)
    macs = np.int64(0)
    for col in range(n):
        macs += counts[col] * np.int64(m)
    rows64, cols64, m64 = np.int64(rows), np.int64(cols), np.int64(m)
    if dataflow == 2:  # is: one K mapping for every streamed column
        widest = np.int64(0)
        for col in range(n):
            widest = max(widest, counts[col])
        depth = (widest + pack - 1) // pack
        folds = ((depth + rows64 - 1) // rows64) * ((m64 + cols64 - 1) // cols64)
        per_fold = rows64 + cols64 + np.int64(n) - 2 + (rows64 if scalesim else 0)
        cycles = folds * per_fold
    else:
        row_tiles = (m64 + rows64 - 1) // rows64
        for start in range(0, n, cols):
            widest = np.int64(0)
            for col in range(start, min(start + cols, n)):
                widest = max(widest, counts[col])
            depth = (widest + pack - 1) // pack
            if depth == 0:
                continue
            if dataflow == 1:  # os: M on rows, the tile's lanes stream `depth`
                folds += row_tiles
                cycles += row_tiles * (rows64 + cols64 + depth - 2)
            else:  # ws: K folds of the tile, M streamed
                tile_folds = (depth + rows64 - 1) // rows64
                folds += tile_folds
                cycles += tile_folds * (rows64 + cols64 + m64 - 2 + (rows64 if scalesim else 0))
    if folds == 0:
        return 0, 0, 0
    if scalesim:
        return cycles - 1, folds, macs  # SCALE-Sim reports the last cycle's index
    if dataflow != 1:
        cycles += rows64  # default timing: only the first preload is exposed
    return cycles, folds, macs


def _check(mask: np.ndarray, dataflow: str) -> np.ndarray:
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (K x N), got shape {mask.shape}")
    if dataflow not in _DATAFLOW_CODES:
        raise ValueError(f"unknown dataflow {dataflow!r}")
    return np.ascontiguousarray(mask != 0)


def masked_cycles(mask: np.ndarray, m: int, rows: int, cols: int, dataflow: str, *, pack: int = 1,
                  timing: str = "default") -> tuple[int, int, int]:
    """(compute cycles, folds, useful MACs) of A[m x K] times a weight matrix with 0/1 ``mask`` (K x N)."""
    mask = _check(mask, dataflow)
    counts = _column_nonzeros(mask)
    cycles, folds, macs = _cycles_from_counts(counts, m, rows, cols, _DATAFLOW_CODES[dataflow], pack,
                                              timing == "scalesim")
    return int(cycles), int(folds), int(macs)


def masked_cycles_reference(mask: np.ndarray, m: int, rows: int, cols: int, dataflow: str, *, pack: int = 1,
                            timing: str = "default") -> tuple[int, int, int]:
    """Plain-Python version of :func:`masked_cycles`, written tile by tile from the definition."""
    mask = _check(mask, dataflow)
    k, n = mask.shape
    lanes = [sum(1 for row in range(k) if mask[row, col]) for col in range(n)]
    macs = m * sum(lanes)
    scalesim = timing == "scalesim"
    preload = rows if scalesim else 0
    if dataflow == "is":
        depth = ceil_div(max(lanes, default=0), pack)
        folds = ceil_div(depth, rows) * ceil_div(m, cols)
        cycles = folds * (rows + cols + n - 2 + preload)
    else:
        folds = cycles = 0
        for start in range(0, n, cols):
            depth = ceil_div(max(lanes[start:start + cols]), pack)
            if depth == 0:
                continue
            if dataflow == "os":
                tile_folds = ceil_div(m, rows)
                cycles += tile_folds * (rows + cols + depth - 2)
            else:
                tile_folds = ceil_div(depth, rows)
                cycles += tile_folds * (rows + cols + m - 2 + preload)
            folds += tile_folds
    if folds == 0:
        return 0, 0, 0
    if scalesim:
        return cycles - 1, folds, macs
    if dataflow != "os":
        cycles += rows
    return cycles, folds, macs


def magnitude_mask(k: int, n: int, density: float, seed: int) -> np.ndarray:
    """Keep the largest-magnitude ``density`` fraction of a seeded random Gaussian weight matrix."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    weights = np.abs(np.random.default_rng(seed).standard_normal((k, n)))
    keep = int(round(density * k * n))
    mask = np.zeros(k * n, dtype=bool)
    if keep:
        mask[np.argpartition(weights.ravel(), -keep)[-keep:]] = True
    return mask.reshape(k, n)


def nm_mask(k: int, n: int, keep: int, group: int, seed: int) -> np.ndarray:
    """N:M pruning of seeded random weights: keep the ``keep`` largest of every ``group`` along K.

    A trailing partial group of r weights keeps min(keep, r).
    """
    weights = np.abs(np.random.default_rng(seed).standard_normal((k, n)))
    mask = np.zeros((k, n), dtype=bool)
    for start in range(0, k, group):
        block = weights[start:start + group]
        top = min(keep, block.shape[0])
        idx = np.argsort(-block, axis=0, kind="stable")[:top]
        np.put_along_axis(mask[start:start + group], idx, True, axis=0)
    return mask
