"""N:M sparsity patterns: N non-zeros kept in every group of M consecutive values along a reduction."""

from __future__ import annotations

from dataclasses import dataclass

from simulator.units import ceil_div
from workloads.ops import nm_kept


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

    @classmethod
    def parse_pruning(cls, text: str) -> SparsityPattern:
        """A pattern that prunes something (N < M), as configs and hardware name them; N = M is refused."""
        from workloads.errors import InputError

        pattern = cls.parse(text)
        if pattern.n == pattern.m:
            raise InputError(f"sparsity pattern {text!r} prunes nothing (N = M); leave it out for dense")
        return pattern

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
        return nm_kept(depth, self.n, self.m)
