"""The geometry of an attention's score ops: what their sizes do not say (pure data, part of the op trace)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workloads.ops import Op


@dataclass(frozen=True)
class AttentionGeometry:
    """What an attention's ops do not say by their sizes: how their products are laid out and masked.

    An attention of ``products`` (samples x key/value heads) products, each the ``group`` query heads of one
    key/value head stacked as rows over ``queries`` query positions, with ``head_dim``-wide heads. Its keys
    are the products' other dimension (``n`` of Q K^T, ``k`` of P V, the score ops' elements over
    products x group x queries). With ``causal``, query i (0-based among the queries) sees the keys up to
    position keys - queries + i; a ``window`` of W keys keeps, of those, the last W (0: no window).
    ``decoder`` says the attention belongs to a decoder stack (its kernel default is the fused one)."""

    products: int
    group: int
    queries: int
    head_dim: int
    causal: bool
    window: int = 0
    decoder: bool = False

    def __hash__(self) -> int:  # the simulator's memo keys hash it once per step: keep the hash
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:
        return hash((self.products, self.group, self.queries, self.head_dim, self.causal, self.window, self.decoder))

    def __post_init__(self) -> None:
        if min(self.products, self.group, self.queries, self.head_dim) <= 0 or self.window < 0:
            raise ValueError(f"attention geometry sizes must be positive: {self}")
        if self.window and not self.causal:
            raise ValueError("a sliding window is a causal mask's band")

    def keys_of(self, op: Op) -> int:
        """Keys each query of ``op`` (Q K^T, P V or a score-sized vector op of this attention) spans."""
        if op.role == "bmm_qk":
            return op.n
        if op.role == "bmm_av":
            return op.k
        return op.elements // (self.products * self.group * self.queries)

    def __str__(self) -> str:
        mask = "causal" if self.causal else "full"
        window = f" window {self.window}" if self.window else ""
        return f"{self.products}x{self.group}x{self.queries}x{self.head_dim} {mask}{window}"
