"""Compute cycles of one matrix product on an R x C systolic array (pure, no I/O).

Mapping per dataflow (SCALE-Sim's conventions; C[MxN] = A[MxK] B[KxN]):

    dataflow  rows mapped  cols mapped  streamed  folds                     cycles per fold
    os        M            N            K         ceil(M/R) * ceil(N/C)     R + C + T - 2
    ws        K            N            M         ceil(K/R) * ceil(N/C)     2R + C + T - 2
    is        K            M            N         ceil(K/R) * ceil(M/C)     2R + C + T - 2

``scalesim`` timing is exactly SCALE-Sim 3.0.0's compute cycles: folds x cycles-per-fold - 1, where
ws/is pay a full R-cycle weight (or input) preload in every fold. ``default`` timing models a
double-buffered stationary operand: the preload of fold i+1 overlaps the streaming of fold i, so
only the first fold pays it. SCALE-Sim also reports the index of the last busy cycle (the count
minus one); ``default`` reports the count, so a T-MAC product on a 1x1 array takes T cycles.

Precision and sparsity change the reduction depth K that the array has to cover, not the
formula's structure: a PE packs ``pack`` MACs of a narrow precision along K, and an N:M zero-
skipping PE consumes only the N non-zeros of every group of M weights along K.

All arithmetic is on Python integers, so no size overflows.
"""

from __future__ import annotations

from dataclasses import dataclass

DATAFLOWS = ("ws", "os", "is")
TIMINGS = ("default", "scalesim")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class SparsityPattern:
    """N non-zeros in every group of M consecutive weights along the reduction dimension."""

    n: int
    m: int

    @classmethod
    def parse(cls, text: str) -> SparsityPattern:
        from workloads.errors import InputError

        try:
            n_text, m_text = text.split(":")
            n, m = int(n_text), int(m_text)
        except ValueError:
            raise InputError(f"sparsity pattern {text!r} is not of the form N:M (e.g. 2:4)") from None
        if n <= 0 or m <= 0:
            raise InputError(f"sparsity pattern {text!r}: N and M must be positive")
        if n > m:
            raise InputError(f"sparsity pattern {text!r}: N must not exceed M")
        return cls(n, m)

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def density(self) -> float:
        return self.n / self.m

    def kept(self, depth: int, timing: str = "default", dataflow: str = "ws") -> int:
        """Non-zeros left of ``depth`` weights along K.

        A trailing partial group of r < M weights keeps min(N, r) of them. SCALE-Sim 3.0.0 instead
        pads the tail to a whole group (N * ceil(K/M)) in ws/is, and streams ceil(K * N / M) in os;
        ``timing="scalesim"`` reproduces both (checked against SCALE-Sim runs in the tests).
        """
        if timing == "scalesim":
            if dataflow == "os":
                return ceil_div(depth * self.n, self.m)
            return self.n * ceil_div(depth, self.m)
        full, tail = divmod(depth, self.m)
        return self.n * full + min(self.n, tail)


@dataclass(frozen=True)
class GemmCycles:
    compute_cycles: int
    folds: int
    reduction_depth: int  # K after sparsity and precision packing
    macs: int  # useful multiply-accumulates (dense count times density for sparse weights)

    def utilization(self, rows: int, cols: int, macs_per_pe: int = 1) -> float:
        """Useful MACs over MAC slots offered during the compute cycles."""
        return self.macs / (self.compute_cycles * rows * cols * macs_per_pe)


def effective_depth(k: int, pack: int = 1, sparsity: SparsityPattern | None = None, timing: str = "default",
                    dataflow: str = "ws") -> int:
    """Reduction depth the array covers: non-zeros (if sparse) packed ``pack`` MACs per PE."""
    kept = sparsity.kept(k, timing, dataflow) if sparsity is not None else k
    return ceil_div(kept, pack)


def mapping(m: int, k: int, n: int, dataflow: str) -> tuple[int, int, int]:
    """(rows mapped, cols mapped, streamed) for a dataflow."""
    if dataflow == "os":
        return m, n, k
    if dataflow == "ws":
        return k, n, m
    if dataflow == "is":
        return k, m, n
    raise ValueError(f"unknown dataflow {dataflow!r}")


def dense_cycles(m: int, k: int, n: int, rows: int, cols: int, dataflow: str, timing: str = "default") -> int:
    """Compute cycles of one dense product (``k`` already reduced by packing and sparsity)."""
    streamed = mapping(m, k, n, dataflow)[2]
    folds = fold_count(m, k, n, rows, cols, dataflow)
    per_fold_streaming = rows + cols + streamed - 2
    preload = 0 if dataflow == "os" else rows  # ws/is load the stationary operand first
    if timing == "scalesim":
        return folds * (preload + per_fold_streaming) - 1
    if timing == "default":
        return preload + folds * per_fold_streaming
    raise ValueError(f"unknown timing {timing!r}")


def fold_count(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> int:
    mapped_rows, mapped_cols, _ = mapping(m, k, n, dataflow)
    return ceil_div(mapped_rows, rows) * ceil_div(mapped_cols, cols)


def gemm_cycles(m: int, k: int, n: int, rows: int, cols: int, dataflow: str, *, batch: int = 1, pack: int = 1,
                sparsity: SparsityPattern | None = None, timing: str = "default") -> GemmCycles:
    """Cycles of ``batch`` independent products, run one after another on the array."""
    depth = effective_depth(k, pack, sparsity, timing, dataflow)
    cycles = batch * dense_cycles(m, depth, n, rows, cols, dataflow, timing)
    kept = sparsity.kept(k) if sparsity is not None else k
    return GemmCycles(compute_cycles=cycles, folds=batch * fold_count(m, depth, n, rows, cols, dataflow),
                      reduction_depth=depth, macs=batch * m * kept * n)
