"""Loop blocking of one matrix product larger than its buffers (pure): how many times each operand comes
from its home.

C[MxN] = A[MxK] B[KxN], per product (a BMM's products run one at a time). Without blocking an operand that
does not fit its buffer is fetched again on every sweep of the dataflow (``streamed``, the accounting
SCALE-Sim's traffic follows). A compiler instead orders and blocks the loops; the schedules searched, each
with its fetches of A and of B:

- ``streamed``: A once if it fits the activation buffer, else once per A sweep; B likewise (filter buffer).
- ``a_blocks``: the M loop outermost, blocks of the most rows of A the activation buffer holds whole
  (all of K); each block stays while every column of B passes: A once, B once per block (once if B fits).
- ``b_blocks``: the mirror, blocks of the most columns of B the filter buffer holds: B once, A once per
  block (once if A fits).
- ``output_tiles``: tiles of Mb x Nb outputs whose partial sums the accumulator buffer holds while K
  streams through in slices: A once per column block (once if it fits), B once per row block (once if it
  fits). For every count of column blocks the widest tile with it is searched, and the most rows that fit
  beside it: the least traffic over every tile shape (:func:`reference_blocking` checks it by brute force).

The schedule chosen moves the fewest bytes from DRAM (operands already on chip cost nothing there); ties go
to the earlier schedule of the list, so a product that fits its buffers keeps ``streamed``. Tile sizes are
in elements, not rounded to the array.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.units import ceil_div

SCHEDULES = ("streamed", "a_blocks", "b_blocks", "output_tiles")


@dataclass(frozen=True)
class Operands:
    """One product's sizes and what fetching each operand costs in DRAM bytes (0: it is not in DRAM)."""

    m: int
    n: int
    a_bytes: int  # A, stored
    b_bytes: int  # B, stored
    a_sweeps: int  # times the dataflow passes A through the array (streamed)
    b_sweeps: int  # and B
    a_dram: bool  # A is fetched from DRAM
    b_dram: bool


@dataclass(frozen=True)
class Buffers:
    """Bytes each on-chip buffer holds, and an accumulator's width in bytes."""

    ifmap: int
    filter: int
    ofmap: int
    accumulator_bytes: int


@dataclass(frozen=True)
class Blocking:
    schedule: str
    a_fetches: int  # times A comes from its home
    b_fetches: int
    rows: int  # Mb: rows of A per block (M when not blocked)
    cols: int  # Nb: columns of B per block (N when not blocked)


def dram_bytes(blocking: Blocking, operands: Operands) -> int:
    """Operand bytes a schedule fetches from DRAM."""
    return (blocking.a_fetches * operands.a_bytes * operands.a_dram
            + blocking.b_fetches * operands.b_bytes * operands.b_dram)


def streamed(operands: Operands, buffers: Buffers) -> Blocking:
    a = 1 if operands.a_bytes <= buffers.ifmap else operands.a_sweeps
    b = 1 if operands.b_bytes <= buffers.filter else operands.b_sweeps
    return Blocking("streamed", a, b, operands.m, operands.n)


def _a_fetches(operands: Operands, buffers: Buffers, cols: int) -> int:
    return 1 if operands.a_bytes <= buffers.ifmap else ceil_div(operands.n, cols)


def _b_fetches(operands: Operands, buffers: Buffers, rows: int) -> int:
    return 1 if operands.b_bytes <= buffers.filter else ceil_div(operands.m, rows)


def _most(capacity: int, bytes_each: int, limit: int) -> int:
    """The most items of ``bytes_each`` that fit ``capacity``, at most ``limit`` (0 if none fits)."""
    return min(limit, capacity // bytes_each) if bytes_each else limit


def _tile(operands: Operands, buffers: Buffers, rows: int, cols: int) -> Blocking:
    return Blocking("output_tiles", _a_fetches(operands, buffers, cols), _b_fetches(operands, buffers, rows), rows,
                    cols)


def candidates(operands: Operands, buffers: Buffers) -> list[Blocking]:
    """Each schedule's best shape (see the module docstring), in the order of :data:`SCHEDULES`."""
    m, n = operands.m, operands.n
    found = [streamed(operands, buffers)]
    rows = _most(buffers.ifmap, ceil_div(operands.a_bytes, m), m)
    if rows:
        found.append(Blocking("a_blocks", 1, _b_fetches(operands, buffers, rows), rows, n))
    cols = _most(buffers.filter, ceil_div(operands.b_bytes, n), n)
    if cols:
        found.append(Blocking("b_blocks", _a_fetches(operands, buffers, cols), 1, m, cols))
    tiles = []
    for blocks in sorted(block_counts(n)):
        cols = ceil_div(n, blocks)  # the widest tile that makes this many column blocks
        rows = _most(buffers.ofmap, cols * buffers.accumulator_bytes, m)
        if rows:
            tiles.append(_tile(operands, buffers, rows, cols))
    if tiles:
        found.append(min(tiles, key=lambda tile: (dram_bytes(tile, operands), -tile.cols)))
    return found


def block_counts(n: int) -> set[int]:
    """Every value ceil(n / width) takes for widths 1..n (about 2 sqrt(n) of them)."""
    counts, width = set(), 1
    while width <= n:
        blocks = ceil_div(n, width)
        counts.add(blocks)
        width = ceil_div(n, blocks - 1) if blocks > 1 else n + 1  # the next width with fewer blocks
    return counts


def best_blocking(operands: Operands, buffers: Buffers) -> Blocking:
    """The schedule that fetches the fewest DRAM bytes (ties: the earlier schedule)."""
    return min(candidates(operands, buffers), key=lambda blocking: dram_bytes(blocking, operands))


def reference_blocking(operands: Operands, buffers: Buffers) -> int:
    """The fewest DRAM bytes over every schedule and every tile shape, by brute force (small products only)."""
    best = dram_bytes(streamed(operands, buffers), operands)
    a_row, b_col = ceil_div(operands.a_bytes, operands.m), ceil_div(operands.b_bytes, operands.n)
    for rows in range(1, operands.m + 1):
        if rows * a_row <= buffers.ifmap:
            best = min(best, dram_bytes(Blocking("a_blocks", 1, _b_fetches(operands, buffers, rows), rows,
                                                 operands.n), operands))
        for cols in range(1, operands.n + 1):
            if rows * cols * buffers.accumulator_bytes <= buffers.ofmap:
                best = min(best, dram_bytes(_tile(operands, buffers, rows, cols), operands))
    for cols in range(1, operands.n + 1):
        if cols * b_col <= buffers.filter:
            best = min(best, dram_bytes(Blocking("b_blocks", _a_fetches(operands, buffers, cols), 1, operands.m,
                                                 cols), operands))
    return best
