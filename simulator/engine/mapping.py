"""How one matrix product C[MxN] = A[MxK] B[KxN] lies on one R x C systolic array (pure).

    dataflow  rows mapped  cols mapped  streamed T  A sweeps    B sweeps    folds along K
    os        M            N            K'          ceil(N/C)   ceil(M/R)   1
    ws        K'           N            M           ceil(N/C)   1           ceil(K'/R)
    is        K'           M            N           1           ceil(M/C)   ceil(K'/R)

K' is the reduction depth the PEs cover: the K weights less those an N:M zero-skipping PE skips, packed
``pack`` MACs per PE. Timing (folds, streamed length), traffic (operand sweeps, partial-sum folds) and
the action counts all read this one mapping.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.formats.sparsity import SparsityPattern
from simulator.units import ceil_div

DATAFLOWS = ("ws", "os", "is")


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


def fold_count(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> int:
    mapped_rows, mapped_cols, _ = mapping(m, k, n, dataflow)
    return ceil_div(mapped_rows, rows) * ceil_div(mapped_cols, cols)


@dataclass(frozen=True)
class Mapping:
    """One product on one array: ``depth`` is K' (see the module docstring)."""

    m: int
    depth: int
    n: int
    rows: int
    cols: int
    dataflow: str

    @classmethod
    def of(cls, m: int, k: int, n: int, rows: int, cols: int, dataflow: str, *, pack: int = 1,
           sparsity: SparsityPattern | None = None, timing: str = "default") -> Mapping:
        """The mapping of (m x k) @ (k x n) whose PEs pack ``pack`` MACs and skip ``sparsity`` along K."""
        return cls(m, effective_depth(k, pack, sparsity, timing, dataflow), n, rows, cols, dataflow)

    @property
    def streamed(self) -> int:
        """T: rows of the moving operand streamed through each fold."""
        return mapping(self.m, self.depth, self.n, self.dataflow)[2]

    @property
    def folds(self) -> int:
        """Tiles of the stationary (ws/is) or output (os) operand, each one pass of the array."""
        return fold_count(self.m, self.depth, self.n, self.rows, self.cols, self.dataflow)

    @property
    def a_sweeps(self) -> int:
        """Times the A operand passes through the array: once per column tile of B (ws/os)."""
        return 1 if self.dataflow == "is" else ceil_div(self.n, self.cols)

    @property
    def b_sweeps(self) -> int:
        """Times the B operand is read from its buffer: once (ws), once per row tile of A (os/is)."""
        return {"ws": 1, "os": ceil_div(self.m, self.rows), "is": ceil_div(self.m, self.cols)}[self.dataflow]

    @property
    def k_folds(self) -> int:
        """Folds along K: each writes every output's partial sum to the accumulator and reads it back."""
        return 1 if self.dataflow == "os" else ceil_div(self.depth, self.rows)
