"""Building blocks shared by the model families: attention, feed-forward, residuals.

Each helper appends ops in the order Hugging Face's eager implementation executes them, so that a
closed-form trace can be compared op by op with a traced one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workloads.ops import OpBuilder


@dataclass(frozen=True)
class AttentionShape:
    """One multi-head attention: ``batch`` sequences, queries of ``q_len`` and keys of ``kv_len`` tokens."""

    batch: int
    q_len: int
    kv_len: int
    hidden: int  # model width (input of the projections, output of attn_out)
    heads: int
    head_dim: int

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim


def attention(b: OpBuilder, prefix: str, layer: int, shape: AttentionShape, *, bias: bool = True,
              fused_qkv: bool = False, kv_first: bool = False, scale: str | None = "scores",
              score_adds: tuple[str, ...] = (), owns_kv: bool = True,
              after_projections: Callable[[], None] | None = None) -> None:
    """Projections, QK^T, optional scaling and additive mask/position bias, softmax, AV, output projection.

    ``scale`` is where 1/sqrt(d) is applied: on the scores ("scores"), on the projected queries
    ("query") or nowhere (None, as in T5). ``score_adds`` names the additive terms (causal mask,
    position bias) added to the scores one after the other. ``kv_first`` computes the key/value projections (on the
    memory in cross-attention) before the query projection.
    """
    s = shape
    q_rows, kv_rows = s.batch * s.q_len, s.batch * s.kv_len
    if fused_qkv:
        b.gemm(f"{prefix}.qkv", layer, "qkv", "attention", q_rows, s.hidden, 3 * s.inner, bias=bias)
    else:
        if not kv_first:
            b.gemm(f"{prefix}.q", layer, "q", "attention", q_rows, s.hidden, s.inner, bias=bias)
        b.gemm(f"{prefix}.k", layer, "k", "attention", kv_rows, s.hidden, s.inner, bias=bias, owns_weight=owns_kv)
        b.gemm(f"{prefix}.v", layer, "v", "attention", kv_rows, s.hidden, s.inner, bias=bias, owns_weight=owns_kv)
        if kv_first:
            b.gemm(f"{prefix}.q", layer, "q", "attention", q_rows, s.hidden, s.inner, bias=bias)
    if after_projections is not None:
        after_projections()
    if scale == "query":
        b.vector(f"{prefix}.query_scale", layer, "mul", "attention", q_rows * s.inner)
    score_elements = s.batch * s.heads * s.q_len * s.kv_len
    b.bmm(f"{prefix}.qk", layer, "bmm_qk", "attention", s.batch * s.heads, s.q_len, s.head_dim, s.kv_len)
    if scale == "scores":
        b.vector(f"{prefix}.score_scale", layer, "mul", "attention", score_elements)
    for term in score_adds:  # additive mask / position bias terms, each one add over the scores
        b.vector(f"{prefix}.{term}_add", layer, "add", "attention", score_elements)
    b.vector(f"{prefix}.softmax", layer, "softmax", "attention", score_elements)
    b.bmm(f"{prefix}.av", layer, "bmm_av", "attention", s.batch * s.heads, s.q_len, s.kv_len, s.head_dim)
    b.gemm(f"{prefix}.out", layer, "attn_out", "attention", q_rows, s.inner, s.hidden, bias=bias)


def feed_forward(b: OpBuilder, prefix: str, layer: int, rows: int, hidden: int, inner: int, activation: str,
                 *, bias: bool = True) -> None:
    b.gemm(f"{prefix}.ffn1", layer, "ffn1", "ffn", rows, hidden, inner, bias=bias)
    b.vector(f"{prefix}.{activation}", layer, activation, "ffn", rows * inner)
    b.gemm(f"{prefix}.ffn2", layer, "ffn2", "ffn", rows, inner, hidden, bias=bias)


def residual(b: OpBuilder, prefix: str, layer: int, group: str, elements: int) -> None:
    b.vector(f"{prefix}.residual_add", layer, "add", group, elements)
