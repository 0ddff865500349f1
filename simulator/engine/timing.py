"""Compute cycles of one matrix product on an R x C systolic array (pure, no I/O).

The product is placed by ``mapping.Mapping`` (SCALE-Sim's conventions): F folds, each streaming T
rows of the moving operand, F = ceil(rows mapped / R) x ceil(cols mapped / C).

``scalesim`` timing is exactly SCALE-Sim 3.0.0's compute cycles: every fold runs alone,
F x (T + R + C - 2 + preload) - 1, where ws/is pay a full R-cycle preload of the stationary operand
in every fold and the result is the last busy cycle's index (a count minus one).

``default`` timing pipelines the folds, as a weight-stationary array with double-buffered PE
registers does (TPU v1, ISCA 2017: weights shift in behind the running tile, data and weights move
as diagonal wavefronts). Fold i+1's first data enters right behind fold i's last, and each PE
switches to its next stationary value as that first data reaches it, so the systolic fill and drain
(R + C - 2) is paid once per product, and in steady state a fold costs max(T, L), where L = R is
the time to shift one stationary tile into a column (ws/is) or to drain one finished output tile
out of a column (os):

    compute cycles = L0 + (F - 1) * max(T, L) + T + (R + C - 2)

L0 = R for ws/is (the first tile must be loaded before any data enters) and 0 for os (an output
tile needs no load; the last tile's drain is the accumulator write-back, which belongs to the
data-movement model, as in SCALE-Sim and accelsim's earlier timing). The independent products of a
batched op (attention heads) are more folds of the same pipeline. The result is a cycle count, so a
T-MAC product on a 1x1 array takes T cycles in os and R + T = T + 1 in ws/is (the weight load).

An array without the shadow registers (``array.double_buffered: false``, ws/is) shifts a tile in only
behind the previous fold's last data, one row per cycle down each column, and a fold starts once its tile
is in place: every fold after the first waits T + L, the load no longer hidden behind the stream:

    compute cycles = L0 + (F - 1) * (T + L) + T + (R + C - 2)

``verification/cycle_reference.py`` checks both formulas against a register-level machine.

Precision and sparsity change the reduction depth K that the array has to cover, not the
formula's structure: a PE packs ``pack`` MACs of a narrow precision along K, and an N:M zero-
skipping PE consumes only the N non-zeros of every group of M weights along K.

All arithmetic is on Python integers, so no size overflows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from numbers import Integral

from simulator.engine.mapping import DATAFLOWS, Mapping
from simulator.formats.sparsity import SparsityPattern
from workloads.errors import InputError

TIMINGS = ("default", "scalesim")


def check_sizes(**sizes: int) -> None:
    """Refuse a size that is not a positive whole number (a bool is not one)."""
    for name, value in sizes.items():
        if type(value) is int and value > 0:  # the common case, without the slow abstract-class check
            continue
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def check_dataflow(dataflow: str) -> None:
    """Refuse a dataflow that is not one of :data:`~simulator.engine.mapping.DATAFLOWS`."""
    if dataflow not in DATAFLOWS:
        raise InputError(f"unknown dataflow {dataflow!r}; choose from {', '.join(DATAFLOWS)}")


def check_timing(timing: str) -> None:
    """Refuse a timing model that is not one of :data:`TIMINGS`."""
    if timing not in TIMINGS:
        raise InputError(f"unknown timing {timing!r}; choose from {', '.join(TIMINGS)}")


@dataclass(frozen=True)
class GemmCycles:
    compute_cycles: int  # as the timing reports it (scalesim: each product's last cycle index, summed)
    folds: int
    reduction_depth: int  # K after sparsity and precision packing
    macs: int  # useful multiply-accumulates (dense count times density for sparse weights)
    busy_cycles: int  # a count of cycles: compute_cycles, plus one per product under scalesim

    def utilization(self, rows: int, cols: int, macs_per_pe: int = 1) -> float:
        """Useful MACs over the MAC slots offered during the busy cycles (a count, never an index)."""
        return self.macs / (self.busy_cycles * rows * cols * macs_per_pe) if self.busy_cycles else 0.0


def stationary_load_cycles(rows: int) -> int:
    """L: cycles to shift one stationary tile into a column (ws/is) or one output tile out of it (os)."""
    return rows


def pipelined_cycles(fold_streams: list[int] | tuple[int, ...], rows: int, cols: int, dataflow: str,
                     double_buffered: bool = True) -> int:
    """Default-timing compute cycles of folds run back to back, given each fold's streamed length T.

    ws/is: L0 + sum over every fold but the last of max(T_f, L) (T_f + L without double buffering)
    + T_last + (R + C - 2).
    os: fold f+1 starts T_f after fold f, later if its results would reach a column's drain port
    before fold f's R results have left: the gap is T_f + max(0, L - T_(f+1)), which is max(T, L)
    when the folds are alike (they differ only under unstructured masks, tile by tile).
    """
    if not fold_streams:
        return 0
    load = stationary_load_cycles(rows)
    if dataflow == "os":
        pairs = zip(fold_streams[:-1], fold_streams[1:], strict=True)
        gaps = sum(stream + max(0, load - after) for stream, after in pairs)
        first_load = 0
    else:
        gaps = sum(max(stream, load) if double_buffered else stream + load for stream in fold_streams[:-1])
        first_load = load
    return first_load + gaps + fold_streams[-1] + rows + cols - 2


def uniform_pipelined_cycles(folds: int, streamed: int, rows: int, cols: int, dataflow: str,
                             double_buffered: bool = True) -> int:
    """:func:`pipelined_cycles` of ``folds`` folds that all stream ``streamed`` rows, in closed form."""
    if folds <= 0:
        return 0
    load = stationary_load_cycles(rows)
    first_load = 0 if dataflow == "os" else load
    gap = max(streamed, load) if double_buffered or dataflow == "os" else streamed + load
    return first_load + (folds - 1) * gap + streamed + rows + cols - 2


def dense_cycles(m: int, k: int, n: int, rows: int, cols: int, dataflow: str, timing: str = "default",
                 batch: int = 1, double_buffered: bool = True) -> int:
    """Compute cycles of ``batch`` dense products (``k`` already reduced by packing and sparsity).

    ``scalesim`` runs each product (and each of its folds) alone; ``default`` pipelines every fold of
    every product.
    """
    placed = Mapping(m, k, n, rows, cols, dataflow)
    streamed, folds = placed.streamed, placed.folds
    if timing == "scalesim":
        preload = 0 if dataflow == "os" else rows  # ws/is load the stationary operand first
        return batch * (folds * (preload + rows + cols + streamed - 2) - 1)
    if timing == "default":
        return uniform_pipelined_cycles(batch * folds, streamed, rows, cols, dataflow, double_buffered)
    raise ValueError(f"unknown timing {timing!r}")


def gemm_cycles(m: int, k: int, n: int, rows: int, cols: int, dataflow: str, *, batch: int = 1, pack: int = 1,
                sparsity: SparsityPattern | None = None, timing: str = "default",
                double_buffered: bool = True) -> GemmCycles:
    """Cycles of ``batch`` independent products of the same shape, run one after another on the array."""
    check_sizes(m=m, k=k, n=n, rows=rows, cols=cols, batch=batch, pack=pack)
    check_dataflow(dataflow)
    placed = Mapping.of(m, k, n, rows, cols, dataflow, pack=pack, sparsity=sparsity, timing=timing)
    depth = placed.depth
    cycles = dense_cycles(m, depth, n, rows, cols, dataflow, timing, batch, double_buffered)
    kept = sparsity.kept(k) if sparsity is not None else k
    busy = cycles + (batch if timing == "scalesim" else 0)  # SCALE-Sim: last index (0 for a 1-cycle product)
    return GemmCycles(compute_cycles=cycles, folds=batch * placed.folds,
                      reduction_depth=depth, macs=batch * m * kept * n, busy_cycles=busy)


@functools.lru_cache(maxsize=1 << 16)
def product_cycles(m: int, k: int, n: int, rows: int, cols: int, dataflow: str, batch: int, pack: int,
                   sparsity: SparsityPattern | None, timing: str, double_buffered: bool = True) -> tuple[int, int, int]:
    """(compute cycles, folds, MACs) of :func:`gemm_cycles`, memoised per process: repeated layers and design
    points that share a product shape cost one evaluation."""
    result = gemm_cycles(m, k, n, rows, cols, dataflow, batch=batch, pack=pack, sparsity=sparsity, timing=timing,
                         double_buffered=double_buffered)
    return result.compute_cycles, result.folds, result.macs
