"""Cycle-stepping reference of the systolic array, for small arrays (plain Python, slow on purpose).

It moves real values through PE registers one cycle at a time and returns both the product and the
cycle count, so the closed forms in timing.py and the mask kernel in masks.py are checked against a
machine that actually computes, not against a restatement of the same formula.

- ws: each fold preloads a weight tile (one row per cycle, R cycles), then activations enter row i
  of the array skewed by i cycles, move one column right per cycle, and partial sums move one row
  down per cycle; a fold ends when the last output leaves the bottom of the last column.
  A PE holds ``pack`` consecutive weights along K and does ``pack`` MACs per cycle.
  With ``mask``, each column lane holds only its non-zero weights (compacted) and their K indices;
  the PE selects its activation by index, and the fold depth is the tile's widest lane.
- os: A rows enter from the left and B columns from the top, both skewed; PE(i, j) accumulates
  C[i, j]; a fold ends with the last MAC.
- is: the input-stationary mapping is the ws mapping of the transposed product C^T = B^T A^T.

``default`` timing exposes only the first preload (double buffering); ``scalesim`` pays every
preload and reports the last cycle's index (count - 1), as SCALE-Sim does.
"""

from __future__ import annotations

import numpy as np

from simulator.timing import ceil_div


def _ws_fold(a: np.ndarray, lanes: list[list[tuple[int, ...]]], weights: np.ndarray, rows: int, cols: int,
             ) -> tuple[np.ndarray, int]:
    """Stream all rows of ``a`` through one weight tile; ``lanes[j][i]`` = K indices held by PE(i, j)."""
    m = a.shape[0]
    out = np.zeros((m, cols), dtype=np.int64)
    act = [[-1] * cols for _ in range(rows)]  # activation row index held by each PE (-1: empty)
    psum = [[None] * cols for _ in range(rows)]  # (row index, value) flowing down
    collected = 0
    cycle = 0
    while collected < m * cols:
        new_act = [[-1] * cols for _ in range(rows)]
        new_psum = [[None] * cols for _ in range(rows)]
        for i in range(rows):
            for j in range(cols):
                if j == 0:
                    index = cycle - i
                    new_act[i][j] = index if 0 <= index < m else -1
                else:
                    new_act[i][j] = act[i][j - 1]
                row = new_act[i][j]
                if row < 0:
                    continue
                above = psum[i - 1][j] if i > 0 else (row, 0)
                assert above is not None and above[0] == row, "partial sum out of step with its activation"
                mac = sum(int(a[row, k]) * int(weights[k, j]) for k in lanes[j][i])
                new_psum[i][j] = (row, above[1] + mac)
        act, psum = new_act, new_psum
        for j in range(cols):
            if psum[rows - 1][j] is not None:
                row, value = psum[rows - 1][j]
                out[row, j] = value
                collected += 1
        cycle += 1
    return out, cycle


def _ws(a: np.ndarray, b: np.ndarray, rows: int, cols: int, pack: int, mask: np.ndarray | None,
        ) -> tuple[np.ndarray, int, int]:
    """(product, streaming cycles summed over folds, folds) for weight-stationary."""
    m, k = a.shape
    n = b.shape[1]
    keep = np.ones((k, n), dtype=bool) if mask is None else mask.astype(bool)
    result = np.zeros((m, n), dtype=np.int64)
    streaming = folds = 0
    for col0 in range(0, n, cols):
        width = min(cols, n - col0)
        kept = [[int(x) for x in np.flatnonzero(keep[:, col0 + j])] for j in range(width)]
        depth = ceil_div(max((len(lane) for lane in kept), default=0), pack)
        for row0 in range(0, depth, rows):
            lanes = [[() for _ in range(rows)] for _ in range(cols)]
            for j in range(width):
                for i in range(rows):
                    start = (row0 + i) * pack
                    lanes[j][i] = tuple(kept[j][start:start + pack])
            weights = np.zeros((k, cols), dtype=np.int64)
            weights[:, :width] = b[:, col0:col0 + width] * keep[:, col0:col0 + width]
            out, cycles = _ws_fold(a, lanes, weights, rows, cols)
            result[:, col0:col0 + width] += out[:, :width]
            streaming += cycles
            folds += 1
    return result, streaming, folds


def _os(a: np.ndarray, b: np.ndarray, rows: int, cols: int, pack: int) -> tuple[np.ndarray, int, int]:
    m, k = a.shape
    n = b.shape[1]
    depth = ceil_div(k, pack)
    result = np.zeros((m, n), dtype=np.int64)
    streaming = folds = 0
    for row0 in range(0, m, rows):
        for col0 in range(0, n, cols):
            acc = np.zeros((rows, cols), dtype=np.int64)
            last = -1
            cycle = 0
            # PE(i, j) meets its step s (pack elements of K) at cycle s + i + j.
            while cycle <= depth + rows + cols - 3:
                for i in range(rows):
                    for j in range(cols):
                        step = cycle - i - j
                        if 0 <= step < depth and row0 + i < m and col0 + j < n:
                            ks = range(step * pack, min(k, (step + 1) * pack))
                            acc[i, j] += sum(int(a[row0 + i, x]) * int(b[x, col0 + j]) for x in ks)
                            last = cycle
                        elif 0 <= step < depth:
                            last = max(last, cycle)  # padding PEs of an edge tile still take the cycle
                cycle += 1
            h, w = min(rows, m - row0), min(cols, n - col0)
            result[row0:row0 + h, col0:col0 + w] = acc[:h, :w]
            streaming += last + 1
            folds += 1
    return result, streaming, folds


def simulate_product(a: np.ndarray, b: np.ndarray, rows: int, cols: int, dataflow: str, *, pack: int = 1,
                     mask: np.ndarray | None = None, timing: str = "default") -> tuple[np.ndarray, int]:
    """(A @ (B masked), compute cycles) by stepping the array cycle by cycle."""
    if dataflow == "ws":
        product, streaming, folds = _ws(a, b, rows, cols, pack, mask)
        preload = rows
    elif dataflow == "is":
        if mask is not None:
            raise ValueError("masks are modelled for ws and os in the reference")
        product_t, streaming, folds = _ws(b.T.copy(), a.T.copy(), rows, cols, pack, None)
        product, preload = product_t.T, rows
    elif dataflow == "os":
        if mask is not None:
            raise ValueError("masks are modelled for ws in the reference")
        product, streaming, folds = _os(a, b, rows, cols, pack)
        preload = 0
    else:
        raise ValueError(f"unknown dataflow {dataflow!r}")
    if folds == 0:
        return product, 0
    if timing == "scalesim":
        return product, streaming + folds * preload - 1
    return product, streaming + preload
