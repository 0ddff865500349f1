"""Loop blocking of one matrix product larger than its buffers (pure): how many times each operand comes
from its home.

C[MxN] = A[MxK] B[KxN], per product (a BMM's products run one at a time). Without blocking an operand that
does not fit its buffer is fetched again on every sweep of the dataflow (``streamed``, the accounting
SCALE-Sim's traffic follows). A compiler instead orders and blocks the loops; the schedules searched, each
with its fetches of A and of B:

- ``streamed``: A once if it fits the activation buffer, else once per A sweep; B likewise (filter buffer).
- ``a_blocks``: the M loop outermost, blocks of the most rows of A the activation buffer holds whole
  (all of K); each block stays while every column of B passes: A once, B once per block.
- ``b_blocks``: the mirror, blocks of the most columns of B the filter buffer holds: B once, A once per
  block.
- ``output_tiles``: tiles of Mb x Nb outputs whose partial sums the accumulator buffer holds while K
  streams through in slices: A once per column block, B once per row block. For every count of column
  blocks the widest tile with it is searched, and the most rows that fit beside it: the least traffic
  over every tile shape (:func:`reference_blocking` checks it by brute force).

An operand that fits its buffer whole is fetched once by one of the block schedules (a single block).
The schedule chosen moves the fewest bytes from DRAM (operands already on chip cost nothing there); ties go
to the earlier schedule of the list (and to the widest tile), so a product that fits its buffers keeps
``streamed``. Tile sizes are in elements, not rounded to the array.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from simulator.units import ceil_div


@dataclass(frozen=True)
class Operands:
    """One product's sizes, its operands' stored bytes and sweeps, and whether each is fetched from DRAM (one
    already on chip costs no DRAM bytes to fetch again)."""

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


def candidates(operands: Operands, buffers: Buffers) -> list[Blocking]:
    """Each schedule's best shape, in the order of the module docstring's list."""
    m, n = operands.m, operands.n
    found = [streamed(operands, buffers)]
    rows = min(m, buffers.ifmap // ceil_div(operands.a_bytes, m))  # the most rows of A held whole
    if rows:
        found.append(Blocking("a_blocks", 1, ceil_div(m, rows), rows, n))
    cols = min(n, buffers.filter // ceil_div(operands.b_bytes, n))
    if cols:
        found.append(Blocking("b_blocks", ceil_div(n, cols), 1, m, cols))
    tiles = []
    for blocks in sorted(block_counts(n)):  # fewest blocks (the widest tile) first
        cols = ceil_div(n, blocks)  # the widest tile that makes this many column blocks
        rows = min(m, buffers.ofmap // (cols * buffers.accumulator_bytes))
        if rows:
            tiles.append(Blocking("output_tiles", blocks, ceil_div(m, rows), rows, cols))
    if tiles:
        found.append(min(tiles, key=lambda tile: dram_bytes(tile, operands)))
    return found


def block_counts(n: int) -> set[int]:
    """Every value ceil(n / width) takes for widths 1..n (about 2 sqrt(n) of them)."""
    counts, width = set(), 1
    while width <= n:
        blocks = ceil_div(n, width)
        counts.add(blocks)
        width = ceil_div(n, blocks - 1) if blocks > 1 else n + 1  # the next width with fewer blocks
    return counts


@functools.lru_cache(maxsize=1 << 14)
def best_blocking(operands: Operands, buffers: Buffers) -> Blocking:
    """The schedule that fetches the fewest DRAM bytes (ties: the earlier schedule); ``streamed`` at once when
    it fetches each operand once (no schedule fetches less), as a product that fits its buffers does."""
    plain = streamed(operands, buffers)
    if plain.a_fetches * operands.a_dram <= 1 and plain.b_fetches * operands.b_dram <= 1:
        return plain
    return min(candidates(operands, buffers), key=lambda blocking: dram_bytes(blocking, operands))


def reference_blocking(operands: Operands, buffers: Buffers) -> int:
    """The fewest DRAM bytes over every schedule and every tile shape, by brute force (small products only):
    each block or tile shape priced from its definition, independently of :func:`candidates`."""
    m, n = operands.m, operands.n
    a = operands.a_bytes if operands.a_dram else 0  # one fetch of each
    b = operands.b_bytes if operands.b_dram else 0
    a_row, b_col = -(-operands.a_bytes // m), -(-operands.b_bytes // n)
    best = (a if operands.a_bytes <= buffers.ifmap else a * operands.a_sweeps) + (
        b if operands.b_bytes <= buffers.filter else b * operands.b_sweeps)
    for rows in range(1, m + 1):
        row_blocks = -(-m // rows)
        if rows * a_row <= buffers.ifmap:  # A's rows held whole, every column of B passing each block
            best = min(best, a + b * row_blocks)
        for cols in range(1, n + 1):
            if rows * cols * buffers.accumulator_bytes <= buffers.ofmap:
                best = min(best, a * -(-n // cols) + b * row_blocks)
    for cols in range(1, n + 1):
        if cols * b_col <= buffers.filter:
            best = min(best, b + a * -(-n // cols))
    return best
