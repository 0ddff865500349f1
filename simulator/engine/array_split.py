"""One matrix op over a chip's several arrays (pure).

A chip has ``cores`` cores of ``array.count`` systolic arrays each. A matrix op of P independent
products of (m x k) @ (k x n) runs on all of them at once, partitioned one of three ways:

- ``products``: each array runs ceil(P / A) whole products (attention heads, batch, conv groups);
- ``n``: each array computes ceil(n / A) output columns of every product: the weights (or a BMM's
  second operand) are partitioned and the first operand goes to every array;
- ``m``: each array computes ceil(m / A) rows of every product: the first operand is partitioned and
  the weights go to every array.

The op takes as long as its busiest array, plus the stall of its DRAM transfers, and the engine picks
the partition that finishes first (ties: products, then n, then m: partitions that share no operand
come first). DRAM bandwidth is the chip's, shared. The operand a partition does not split goes to every
array in use: from its buffer, or from DRAM again when it does not fit there (weights of a split along
m), which is what makes a partition cost traffic as well as cycles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workloads.ops import Op

KINDS = ("none", "products", "n", "m")


@dataclass(frozen=True)
class Split:
    kind: str  # one of KINDS ("none": one array)
    arrays: int  # arrays in use
    batch: int  # per array: products, rows and output columns
    m: int
    n: int

    @property
    def label(self) -> str:
        """How the op was split, for the results: "" on one array, else e.g. "n/4"."""
        return "" if self.kind == "none" else f"{self.kind}/{self.arrays}"


def _share(size: int, arrays: int) -> tuple[int, int]:
    """(arrays used, elements per array) when ``size`` elements are dealt out to ``arrays`` arrays."""
    per = -(-size // arrays)
    return -(-size // per), per


def candidates(op: Op, arrays: int) -> list[Split]:
    """The partitions of ``op`` over ``arrays`` arrays, in tie-break order."""
    if arrays == 1:
        return [Split("none", 1, op.batch, op.m, op.n)]
    splits = []
    if op.batch > 1:
        used, per = _share(op.batch, arrays)
        splits.append(Split("products", used, per, op.m, op.n))
    for kind, size in (("n", op.n), ("m", op.m)):
        if size > 1:
            used, per = _share(size, arrays)
            splits.append(Split(kind, used, op.batch, per if kind == "m" else op.m, per if kind == "n" else op.n))
    return splits or [Split("none", 1, op.batch, op.m, op.n)]


def best_split(op: Op, arrays: int, cycles: Callable[[Split], int],
               bound: Callable[[Split], int] | None = None) -> Split:
    """The partition whose busiest array finishes first (``cycles`` of one array's share; ties: the first).
    ``bound``, a cheaper lower bound of ``cycles``, spares evaluating a partition that cannot be first."""
    best, fewest = None, 0
    for split in candidates(op, arrays):
        if best is not None and bound is not None and bound(split) >= fewest:
            continue
        taken = cycles(split)
        if best is None or taken < fewest:
            best, fewest = split, taken
    assert best is not None  # there is always a candidate
    return best
