"""Cycle-stepping reference of the systolic array, for small arrays (plain Python, slow on purpose).

It moves real values through PE registers one cycle at a time and returns both the product and the
cycle count, so the closed forms in timing.py and the mask kernel in masks.py are checked against a
machine that actually computes, not against a restatement of the same formula. Folds are decided
by the machine's own controllers (a feeder and one loader or drain port per column), not by the
formula.

- ws: every PE has an active and a shadow weight register; the shadow registers of a column form a
  shift chain fed by one port at the top, so a tile takes R cycles to shift in (the deepest row's
  weights first; each register latches from the cycle the tile's front reaches it). Activations enter
  row i of the array skewed by i cycles and move one column right per cycle; partial sums move one
  row down per cycle and leave the bottom row into an accumulator (K folds add up there). Each
  activation carries its fold: a PE swaps in its shadow tile when the first activation of the next
  fold reaches it. A column's loader starts shifting the next tile in once the top PE of the
  column has swapped (the chain then reaches each row after that row has swapped), and the feeder
  starts a fold once the previous fold's stream has entered and column 0 holds the fold's tile.
  A PE holds ``pack`` consecutive weights along K and does ``pack`` MACs per cycle. With ``mask``,
  each column lane holds only its non-zero weights (compacted) and their K indices; the PE selects
  its activation by index, and the tile's K depth is its widest lane.
- os: A rows enter from the left and B columns from the top, both skewed; PE(i, j) accumulates
  C[i, j]. After its last MAC of a fold the PE moves the sum into a shadow output register, and a
  port at the bottom of each column drains one shadow register per cycle. The feeder starts a fold
  once the previous stream has entered and column 0's port will be free for the fold's results, so
  a short fold after a long one waits for the long one's drain. The compute count ends with the
  last MAC: the last tile's drain is the accumulator write-back. With ``mask``, PE(i, j) steps
  through column j's non-zero weights, selecting its activation by index, and a column tile streams
  for its widest lane.
- is: the input-stationary mapping is the ws mapping of the transposed product C^T = B^T A^T.

``timing="scalesim"`` switches double buffering off: each fold starts once the previous one has
left the array (ws/is load their tile only then), and the count is the last cycle's index, as
SCALE-Sim reports it. ``double_buffered=False`` (ws/is, default timing) keeps the pipeline but drops
the shadow registers: a column's loader shifts the next tile in only once the previous fold's last
activation has passed the column's top PE, so the new weights trail the old fold's data down the
column (each register is overwritten only after its PE's last use of it, which the machine checks).
Batched products (``a`` of shape B x M x K, ``b`` B x K x N) are more folds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulator.units import ceil_div


@dataclass
class _WsFold:
    acts: np.ndarray  # T x K rows streamed through the tile
    pe_weights: list[list[tuple[tuple[int, int], ...]]]  # [i][j] -> ((k index, weight), ...) held by PE(i, j)
    batch: int
    col0: int
    width: int


@dataclass
class _Slot:
    """One shadow register of a ws column chain: a weight group in transit or in place."""

    fold: int
    row: int  # the row it is destined for
    weights: tuple[tuple[int, int], ...]
    consumed: bool = False


@dataclass
class _Column:
    chain: list[_Slot | None]
    next_fold: int = 0  # next tile to shift in
    shifting: int = -1  # fold being shifted in (-1: idle)
    steps: int = 0  # shifts done for it
    loaded: list[int] = field(default_factory=list)  # folds fully in place, in order


def _ws_folds(a: np.ndarray, b: np.ndarray, rows: int, cols: int, pack: int, mask: np.ndarray | None,
              ) -> list[_WsFold]:
    """Weight tiles in execution order: batch, column tile, then K tile."""
    folds = []
    for batch in range(a.shape[0]):
        k, n = b.shape[1:]
        keep = np.ones((k, n), dtype=bool) if mask is None else mask.astype(bool)
        for col0 in range(0, n, cols):
            width = min(cols, n - col0)
            kept = [[int(x) for x in np.flatnonzero(keep[:, col0 + j])] for j in range(width)]
            depth = ceil_div(max((len(lane) for lane in kept), default=0), pack)
            for row0 in range(0, depth, rows):
                pe = [[() for _ in range(cols)] for _ in range(rows)]
                for j in range(width):
                    for i in range(rows):
                        start = (row0 + i) * pack
                        pe[i][j] = tuple((x, int(b[batch, x, col0 + j])) for x in kept[j][start:start + pack])
                folds.append(_WsFold(a[batch], pe, batch, col0, width))
    return folds


def _ws_machine(folds: list[_WsFold], rows: int, cols: int, out: np.ndarray, buffering: str) -> int:
    """Run weight-stationary folds through the array, adding outputs into ``out``; returns cycles taken.
    ``buffering``: "double" (shadow registers), "single" (none, pipelined) or "serial" (SCALE-Sim's)."""
    count = len(folds)
    starts: list[int] = []  # cycle at which each fold's first activation entered row 0
    columns = [_Column(chain=[None] * rows) for _ in range(cols)]
    active: list[list[_Slot | None]] = [[None] * cols for _ in range(rows)]
    act: list[list[tuple[int, int] | None]] = [[None] * cols for _ in range(rows)]  # (fold, stream index)
    psum: list[list[tuple[int, int, int] | None]] = [[None] * cols for _ in range(rows)]  # (fold, index, value)
    pending = sum(fold.acts.shape[0] * cols for fold in folds)  # outputs still to leave the bottom row
    left = [fold.acts.shape[0] * cols for fold in folds]  # per fold
    cycle = 0
    while pending:
        # Feeder: start the next fold once column 0 holds its tile and (double-buffered) the previous
        # fold's stream has entered; without double buffering the tile is loaded only into an empty array.
        nxt = len(starts)
        stream_free = buffering == "serial" or not starts or cycle >= starts[-1] + folds[nxt - 1].acts.shape[0]
        if nxt < count and nxt in columns[0].loaded and stream_free:
            starts.append(cycle)
        new_act, new_psum = _ws_pe_step(folds, starts, columns, active, act, psum, cycle)
        for j, column in enumerate(columns):
            _ws_load_step(column, j, folds, starts, active, left, rows, buffering, cycle)
        act, psum = new_act, new_psum
        pending -= _ws_drain(psum[rows - 1], folds, out, left)
        cycle += 1
    return cycle


def _ws_feed(folds: list[_WsFold], starts: list[int], cycle: int, row: int) -> tuple[int, int] | None:
    """The (fold, stream index) entering ``row`` at column 0 this cycle: at most one fold streams into a row."""
    for f in range(len(starts) - 1, -1, -1):
        index = cycle - row - starts[f]
        if index >= 0:
            return (f, index) if index < folds[f].acts.shape[0] else None
    return None


def _ws_pe_step(folds: list[_WsFold], starts: list[int], columns: list[_Column], active: list[list[_Slot | None]],
                act: list[list[tuple[int, int] | None]], psum: list[list[tuple[int, int, int] | None]], cycle: int,
                ) -> tuple[list[list[tuple[int, int] | None]], list[list[tuple[int, int, int] | None]]]:
    """One cycle of every PE: activations move right, partial sums down, each PE swapping in its shadow
    tile at a new fold's first activation. Returns the registers' next values."""
    rows, cols = len(act), len(act[0])
    new_act: list[list[tuple[int, int] | None]] = [[None] * cols for _ in range(rows)]
    new_psum: list[list[tuple[int, int, int] | None]] = [[None] * cols for _ in range(rows)]
    for i in range(rows):
        for j in range(cols):
            token = new_act[i][j] = _ws_feed(folds, starts, cycle, i) if j == 0 else act[i][j - 1]
            if token is None:
                continue
            f, index = token
            held = active[i][j]
            if held is None or held.fold != f:  # first activation of a new fold: swap in the shadow
                slot = columns[j].chain[i]
                assert slot is not None and slot.fold == f and slot.row == i and f in columns[j].loaded, (
                    f"PE({i},{j}) needs tile {f} at cycle {cycle} but it is not in place")
                slot.consumed = True
                active[i][j] = held = slot
            above = psum[i - 1][j] if i > 0 else (f, index, 0)
            assert above is not None and above[:2] == (f, index), "partial sum out of step with its activation"
            mac = sum(int(folds[f].acts[index, x]) * w for x, w in held.weights)
            new_psum[i][j] = (f, index, above[2] + mac)
    return new_act, new_psum


def _ws_load_step(column: _Column, j: int, folds: list[_WsFold], starts: list[int], active: list[list[_Slot | None]],
                  left: list[int], rows: int, buffering: str, cycle: int) -> None:
    """Column ``j``'s loader: it shifts its next tile in, one row per cycle, behind the swap wavefront."""
    if column.shifting < 0 and column.next_fold < len(folds):
        previous = column.next_fold - 1
        if previous < 0:
            ready = True
        elif buffering == "double":
            top = active[0][j]
            ready = top is not None and top.fold == previous  # the top PE has swapped
        elif buffering == "single":  # the previous fold's last activation has passed PE(0, j)
            ready = previous < len(starts) and cycle >= starts[previous] + folds[previous].acts.shape[0] + j
        else:
            ready = left[previous] == 0  # no double buffering: load once the array is empty
        if ready:
            column.shifting, column.steps = column.next_fold, 0
    if column.shifting < 0:
        return
    f = column.shifting
    front = column.chain[column.steps]
    assert front is None or front.consumed or front.fold == f, (
        f"column {j} overwrites a tile not yet swapped in at cycle {cycle}")
    if buffering == "single" and f > 0:  # register ``steps`` is PE(steps, j)'s own: its old fold must be done
        assert cycle > starts[f - 1] + folds[f - 1].acts.shape[0] - 1 + column.steps + j, (
            f"column {j} overwrites PE({column.steps},{j})'s weight in use at cycle {cycle}")
    row = rows - 1 - column.steps  # the deepest row's weights enter first
    # the tile's front moves one register down per cycle; registers below it keep their tile
    column.chain[:column.steps + 1] = [_Slot(f, row, folds[f].pe_weights[row][j])] + column.chain[:column.steps]
    column.steps += 1
    if column.steps == rows:
        column.loaded.append(f)
        column.shifting, column.next_fold = -1, f + 1


def _ws_drain(bottom: list[tuple[int, int, int] | None], folds: list[_WsFold], out: np.ndarray, left: list[int],
              ) -> int:
    """The finished sums leaving the bottom row this cycle, added into ``out``; how many left."""
    drained = 0
    for j, cell in enumerate(bottom):
        if cell is not None:
            f, index, value = cell
            fold = folds[f]
            if j < fold.width:
                out[fold.batch, index, fold.col0 + j] += value
            left[f] -= 1
            drained += 1
    return drained


def _os_lanes_and_tiles(a: np.ndarray, b: np.ndarray, rows: int, cols: int, pack: int, mask: np.ndarray | None,
                        ) -> tuple[list[list[int]], list[tuple[int, int, int, int]]]:
    """Each column's kept K indices, and the output tiles (batch, row0, col0, depth) in execution order
    (an all-zero column tile is skipped)."""
    batches, m, k = a.shape
    n = b.shape[2]
    keep = np.ones((k, n), dtype=bool) if mask is None else mask.astype(bool)
    lanes = [[int(x) for x in np.flatnonzero(keep[:, col])] for col in range(n)]
    tiles = []
    for batch in range(batches):
        for col0 in range(0, n, cols):
            depth = ceil_div(max(len(lane) for lane in lanes[col0:col0 + cols]), pack)
            tiles += [(batch, row0, col0, depth) for row0 in range(0, m, rows)] if depth else []
    return lanes, tiles


def _os_can_start(tiles: list[tuple[int, int, int, int]], starts: list[int], port_busy_until: list[int], rows: int,
                  cols: int, double_buffered: bool, cycle: int) -> bool:
    """Whether the next tile may start now."""
    nxt = len(starts)
    if nxt >= len(tiles):
        return False
    if not starts:
        return True
    if double_buffered:  # inputs free, and column 0's port free when this fold's first result is ready
        return cycle >= starts[-1] + tiles[nxt - 1][3] and cycle + tiles[nxt][3] > port_busy_until[0]
    return cycle >= starts[-1] + tiles[nxt - 1][3] + rows + cols - 2


def _os_drain(shadow: list[list[tuple[int, int] | None]], tiles: list[tuple[int, int, int, int]], starts: list[int],
              out: np.ndarray, cycle: int) -> None:
    """Each column's port drains the lowest output register filled in an earlier cycle."""
    rows, cols = len(shadow), len(shadow[0])
    m, n = out.shape[1], out.shape[2]
    for j in range(cols):
        for i in range(rows):
            cell = shadow[i][j]
            if cell is not None:
                f, value = cell
                batch, row0, col0, depth = tiles[f]
                if starts[f] + depth + i + j <= cycle:
                    if row0 + i < m and col0 + j < n:
                        out[batch, row0 + i, col0 + j] = value
                    shadow[i][j] = None
                    break


def _os_machine(a: np.ndarray, b: np.ndarray, rows: int, cols: int, pack: int, mask: np.ndarray | None,
                out: np.ndarray, double_buffered: bool) -> int:
    """Run output-stationary folds (batch, column tile, row tile); returns cycles to the last MAC.

    With ``mask``, PE(i, j) steps through the non-zero weights of column j only, and the columns of
    a tile stream together for its widest lane; an all-zero column tile is skipped.
    """
    m, n = a.shape[1], b.shape[2]
    lanes, tiles = _os_lanes_and_tiles(a, b, rows, cols, pack, mask)
    starts: list[int] = []
    acc = [[0] * cols for _ in range(rows)]
    shadow: list[list[tuple[int, int] | None]] = [[None] * cols for _ in range(rows)]  # (fold, value)
    port_busy_until = [-1] * cols  # last cycle each column's drain port is reserved for
    last_mac = -1
    cycle = 0
    while len(starts) < len(tiles) or any(cell is not None for line in shadow for cell in line) or (
            starts and cycle <= starts[-1] + tiles[-1][3] + rows + cols):
        if _os_can_start(tiles, starts, port_busy_until, rows, cols, double_buffered, cycle):
            depth = tiles[len(starts)][3]
            starts.append(cycle)
            for j in range(cols):  # the fold's R results leave column j in R consecutive cycles
                port_busy_until[j] = cycle + depth + j + rows - 1
        _os_drain(shadow, tiles, starts, out, cycle)
        for f, start in enumerate(starts):
            batch, row0, col0, depth = tiles[f]
            for i in range(rows):
                for j in range(cols):
                    step = cycle - start - i - j
                    if not 0 <= step < depth:
                        continue
                    last_mac = max(last_mac, cycle)  # padding PEs of an edge tile still take the cycle
                    if row0 + i < m and col0 + j < n:
                        ks = lanes[col0 + j][step * pack:(step + 1) * pack]
                        acc[i][j] += sum(int(a[batch, row0 + i, x]) * int(b[batch, x, col0 + j]) for x in ks)
                    if step == depth - 1:  # last MAC: the sum moves to the shadow register
                        assert shadow[i][j] is None, f"PE({i},{j}) output register still full at cycle {cycle}"
                        shadow[i][j] = (f, acc[i][j])
                        acc[i][j] = 0
        cycle += 1
    return last_mac + 1


def simulate_product(a: np.ndarray, b: np.ndarray, rows: int, cols: int, dataflow: str, *, pack: int = 1,
                     mask: np.ndarray | None = None, timing: str = "default",
                     double_buffered: bool = True) -> tuple[np.ndarray, int]:
    """(A @ (B masked), compute cycles) by stepping the array cycle by cycle.

    ``a`` is M x K (or B x M x K for a batch of independent products), ``b`` K x N (or B x K x N).
    """
    batched = a.ndim == 3
    a3, b3 = (a, b) if batched else (a[None], b[None])
    buffering = "serial" if timing == "scalesim" else "double" if double_buffered else "single"
    if buffering == "single" and dataflow == "os":
        raise ValueError("double_buffered applies to ws and is")
    double_buffered = buffering != "serial"  # the os machine's
    if dataflow in ("ws", "is"):
        if dataflow == "is":
            if mask is not None:
                raise ValueError("masks are modelled for ws and os in the reference")
            a3, b3 = b3.transpose(0, 2, 1).copy(), a3.transpose(0, 2, 1).copy()
        out = np.zeros((a3.shape[0], a3.shape[1], b3.shape[2]), dtype=np.int64)
        folds = _ws_folds(a3, b3, rows, cols, pack, mask)
        cycles = _ws_machine(folds, rows, cols, out, buffering) if folds else 0
        if dataflow == "is":
            out = out.transpose(0, 2, 1)
    elif dataflow == "os":
        out = np.zeros((a3.shape[0], a3.shape[1], b3.shape[2]), dtype=np.int64)
        cycles = _os_machine(a3, b3, rows, cols, pack, mask, out, double_buffered)
    else:
        raise ValueError(f"unknown dataflow {dataflow!r}")
    product = out if batched else out[0]
    if cycles and timing == "scalesim":
        return product, cycles - a3.shape[0]  # SCALE-Sim runs each product alone: its last cycle's index
    return product, cycles
