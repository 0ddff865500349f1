"""Unstructured zero-skipping from a real 0/1 weight mask (K x N), and mask generators.

Zero-skipping PEs consume only the non-zero weights of their lane (a column of the weight matrix,
i.e. one output channel). Lanes that move in lock-step wait for the slowest one:

- ws: the C lanes of one column tile share their K folds, so the tile needs
  ceil(max non-zeros in the tile / pack) rows of reduction depth;
- os: the C lanes of one column tile stream K together, so a fold streams that same maximum;
- is: all N weight columns are streamed through one K mapping, so the depth is the maximum over
  every column.

Folds are timed as in timing.py (pipelined by default, each alone under ``scalesim``). With an
all-ones mask this gives the dense cycles; with an N:M mask (M dividing K) the structured cycles.
All-zero tiles are skipped. ``masked_cycles`` is the Numba kernel,
``masked_cycles_reference`` the plain-Python version it is tested against.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simulator.engine.mapping import DATAFLOWS
from simulator.engine.timing import pipelined_cycles
from simulator.units import ceil_div

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
def _widest(counts: np.ndarray, start: int, stop: int) -> np.int64:
    """The most non-zeros of any column in counts[start:stop] (0 for none)."""
    widest = np.int64(0)
    for col in range(start, stop):
        widest = max(widest, counts[col])
    return widest


@njit(cache=True)
def _is_folds(counts: np.ndarray, m64: np.int64, rows64: np.int64, cols64: np.int64, pack: int,
              ) -> tuple[np.int64, np.int64, np.int64, np.int64]:
    """is: one K mapping for every streamed column. (folds, isolated, steady, last) as in
    _cycles_from_counts."""
    depth = (_widest(counts, 0, counts.shape[0]) + pack - 1) // pack
    folds = ((depth + rows64 - 1) // rows64) * ((m64 + cols64 - 1) // cols64)
    stream = np.int64(counts.shape[0])
    isolated = folds * (rows64 + cols64 + stream - 2 + rows64)
    if folds == 0:
        return folds, isolated, np.int64(0), np.int64(-1)
    return folds, isolated, (folds - 1) * max(stream, rows64), stream


@njit(cache=True)
def _tiled_folds(counts: np.ndarray, m64: np.int64, rows64: np.int64, cols: int, dataflow: int, pack: int,
                 ) -> tuple[np.int64, np.int64, np.int64, np.int64]:
    """ws (K folds of each column tile, M streamed) or os (M on rows, each tile's lanes stream their
    depth): (folds, isolated, steady, last) as in _cycles_from_counts."""
    n = counts.shape[0]
    cols64 = np.int64(cols)
    folds = isolated = steady = np.int64(0)
    last = np.int64(-1)
    row_tiles = (m64 + rows64 - 1) // rows64
    for start in range(0, n, cols):
        depth = (_widest(counts, start, min(start + cols, n)) + pack - 1) // pack
        if depth == 0:
            continue
        if dataflow == 1:  # os
            tile_folds, stream = row_tiles, depth
            isolated += tile_folds * (rows64 + cols64 + stream - 2)
        else:  # ws
            tile_folds, stream = (depth + rows64 - 1) // rows64, m64
            isolated += tile_folds * (rows64 + cols64 + stream - 2 + rows64)
        if last >= 0:  # the gap from the previous tile's last fold to this tile's first
            steady += last + max(np.int64(0), rows64 - stream) if dataflow == 1 else max(last, rows64)
        steady += (tile_folds - 1) * max(stream, rows64)
        last = stream
        folds += tile_folds
    return folds, isolated, steady, last


@njit(cache=True)
def _cycles_from_counts(counts: np.ndarray, m: int, rows: int, cols: int, dataflow: int, pack: int,
                        scalesim: bool) -> tuple[np.int64, np.int64, np.int64]:
    """(compute cycles, folds, useful MACs) from per-column non-zero counts.

    Folds run in the order column tile, then K (ws) or M (os) tile. ``scalesim`` runs every fold alone
    (SCALE-Sim's count, last cycle's index: the sum of whole folds, ``isolated``); the default pipelines
    them as timing.pipelined_cycles does: each gap between fold starts is max(T, R) (os: T_f + max(0,
    R - T_(f+1))), summed in ``steady`` over every fold but the last, then the last fold streams
    (``last``) and the array fills and drains once.
    """
    macs = np.int64(0)
    for col in range(counts.shape[0]):
        macs += counts[col] * np.int64(m)
    rows64, cols64, m64 = np.int64(rows), np.int64(cols), np.int64(m)
    if dataflow == 2:
        folds, isolated, steady, last = _is_folds(counts, m64, rows64, cols64, pack)
    else:
        folds, isolated, steady, last = _tiled_folds(counts, m64, rows64, cols, dataflow, pack)
    if folds == 0:
        return np.int64(0), np.int64(0), np.int64(0)
    if scalesim:
        return isolated - 1, folds, macs  # SCALE-Sim reports the last cycle's index
    first_load = np.int64(0) if dataflow == 1 else rows64
    return first_load + steady + last + rows64 + cols64 - 2, folds, macs


def _check(mask: np.ndarray, dataflow: str) -> np.ndarray:
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (K x N), got shape {mask.shape}")
    if dataflow not in _DATAFLOW_CODES:
        raise ValueError(f"unknown dataflow {dataflow!r}")
    return np.ascontiguousarray(mask != 0)


def column_nonzeros(mask: np.ndarray) -> np.ndarray:
    """The kept weights of every column (output channel) of a K x N ``mask``: all the timing needs."""
    return _column_nonzeros(_check(mask, "ws"))


def masked_cycles(mask: np.ndarray, m: int, rows: int, cols: int, dataflow: str, *, pack: int = 1,
                  timing: str = "default", double_buffered: bool = True) -> tuple[int, int, int]:
    """(compute cycles, folds, useful MACs) of A[m x K] times a weight matrix with 0/1 ``mask`` (K x N)."""
    return counted_cycles(_column_nonzeros(_check(mask, dataflow)), m, rows, cols, dataflow, pack=pack,
                          timing=timing, double_buffered=double_buffered)


def counted_cycles(counts: np.ndarray, m: int, rows: int, cols: int, dataflow: str, *, pack: int = 1,
                   timing: str = "default", double_buffered: bool = True) -> tuple[int, int, int]:
    """:func:`masked_cycles` from the mask's ``column_nonzeros``. Without double buffering (ws/is) every gap
    is T_f + R: the serial count's streamed rows (each fold there takes T_f + 2R + C - 2) plus one load per
    fold, and the fill and drain once."""
    if dataflow not in _DATAFLOW_CODES:
        raise ValueError(f"unknown dataflow {dataflow!r}")
    serial = not double_buffered and dataflow != "os" and timing != "scalesim"
    cycles, folds, macs = _cycles_from_counts(np.ascontiguousarray(counts, dtype=np.int64), m, rows, cols,
                                              _DATAFLOW_CODES[dataflow], pack, timing == "scalesim" or serial)
    if serial and folds:
        streamed = int(cycles) + 1 - int(folds) * (2 * rows + cols - 2)
        return rows + streamed + int(folds) * rows + cols - 2, int(folds), int(macs)
    return int(cycles), int(folds), int(macs)


def pattern_violation(mask: np.ndarray, keep: int, group: int) -> tuple[int, int] | None:
    """(first K index of the group, column) of the first group of ``group`` consecutive weights along K of a
    K x N ``mask`` that keeps more than ``keep`` (a trailing partial group too), or None when the mask
    follows the keep:group pattern."""
    k, n = mask.shape
    whole = k - k % group
    over = np.argwhere(np.count_nonzero(mask[:whole].reshape(whole // group, group, n), axis=1) > keep)
    if over.size:
        return int(over[0, 0]) * group, int(over[0, 1])
    tail = np.flatnonzero(np.count_nonzero(mask[whole:], axis=0) > keep)
    if tail.size:
        return whole, int(tail[0])
    return None


def masked_cycles_reference(mask: np.ndarray, m: int, rows: int, cols: int, dataflow: str, *, pack: int = 1,
                            timing: str = "default", double_buffered: bool = True) -> tuple[int, int, int]:
    """Plain-Python version of :func:`masked_cycles`: list every fold's streamed length, then time them."""
    mask = _check(mask, dataflow)
    k, n = mask.shape
    lanes = [sum(1 for row in range(k) if mask[row, col]) for col in range(n)]
    macs = m * sum(lanes)
    streams: list[int] = []  # streamed length of every fold, in execution order
    if dataflow == "is":
        depth = ceil_div(max(lanes, default=0), pack)
        streams = [n] * (ceil_div(depth, rows) * ceil_div(m, cols))
    else:
        for start in range(0, n, cols):
            depth = ceil_div(max(lanes[start:start + cols]), pack)
            if dataflow == "os":
                streams += [depth] * (ceil_div(m, rows) if depth else 0)
            else:
                streams += [m] * ceil_div(depth, rows)
    if not streams:
        return 0, 0, 0
    if timing == "scalesim":
        preload = 0 if dataflow == "os" else rows
        return sum(rows + cols + stream - 2 + preload for stream in streams) - 1, len(streams), macs
    return pipelined_cycles(streams, rows, cols, dataflow, double_buffered), len(streams), macs


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

