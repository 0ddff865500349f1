"""Matrix ops timed from their weight masks, on one array or split over several (docs/engine.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from simulator.engine.array_split import Split
from workloads.ops import Op

if TYPE_CHECKING:
    from simulator.spec.hardware import ArrayConfig


class MaskedWeights:
    """The ops timed from their weight masks (``mask_for``: op -> K x N mask): each mask is read once and only
    its kept weights per output column are kept (a checkpoint's masks are streamed, one tensor at a time)."""

    def __init__(self, mask_for: Callable[[Op], np.ndarray] | None, array: ArrayConfig, timing: str) -> None:
        self.mask_for = mask_for
        self.array = array
        self.timing = timing
        self._counts: dict[str, np.ndarray] = {}  # op name -> kept weights per column

    def column_counts(self, op: Op) -> np.ndarray:
        counts = self._counts.get(op.name)
        if counts is None:
            assert self.mask_for is not None  # masked only with masks (the engine checks)
            from simulator.engine.masks import column_nonzeros  # numba: loaded only for masked runs

            counts = self._counts[op.name] = column_nonzeros(self.mask_for(op))
        return counts

    def kept(self, op: Op) -> int:
        """Kept weights of the op (all of its products)."""
        return int(self.column_counts(op).sum()) * op.batch

    def share_cycles(self, op: Op, split: Split, pack: int) -> tuple[int, int, int]:
        """(compute cycles, folds, useful MACs) of the busiest array's share of the op: its ``split.m`` rows,
        and its slice of the output columns (a split along n deals them out ``split.n`` at a time)."""
        from simulator.engine.masks import counted_cycles

        counts = self.column_counts(op)
        shares = [counts[start:start + split.n] for start in range(0, op.n, split.n)]
        return max(counted_cycles(share, split.m, self.array.rows, self.array.cols, self.array.dataflow,
                                  pack=pack, timing=self.timing, double_buffered=self.array.double_buffered)
                   for share in shares)
