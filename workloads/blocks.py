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
              score_adds: tuple[str, ...] = (), memory: str | None = None, position_bias: str | None = None,
              cached: bool = False, after_projections: Callable[[], str] | None = None) -> str:
    """Projections, QK^T, optional scaling and additive mask/position bias, softmax, AV, output projection.

    The projections read the current activation; in cross-attention k and v read ``memory`` (the encoder
    output). ``scale`` is where 1/sqrt(d) is applied: on the scores ("scores"), on the projected
    queries ("query") or nowhere (None, as in T5). ``score_adds`` names the additive terms added to
    the scores one after the other: "position_bias" adds the tensor ``position_bias`` (or the one
    ``after_projections`` computes), other terms (a causal mask) are generated on the fly.
    ``kv_first`` computes the key/value projections before the query projection. ``cached`` (a decode
    step): the new keys and values are appended to this layer's KV cache and the BMMs read the whole
    cache. Returns the output tensor.
    """
    s = shape
    q_rows, kv_rows = s.batch * s.q_len, s.batch * s.kv_len
    x = b.current
    source = memory or x
    if fused_qkv:
        if memory is not None:
            raise ValueError("a fused q/k/v projection reads one input")
        b.gemm(f"{prefix}.qkv", layer, "qkv", "attention", q_rows, s.hidden, 3 * s.inner, bias=bias,
               parts=("q", "k", "v"))
        q, k, v = (f"{prefix}.qkv.{part}" for part in "qkv")
    else:
        new_rows = q_rows if cached else kv_rows  # a decode step projects only the new tokens
        if not kv_first:
            q = b.gemm(f"{prefix}.q", layer, "q", "attention", q_rows, s.hidden, s.inner, bias=bias, reads=x)
        k = b.gemm(f"{prefix}.k", layer, "k", "attention", new_rows, s.hidden, s.inner, bias=bias, reads=source)
        v = b.gemm(f"{prefix}.v", layer, "v", "attention", new_rows, s.hidden, s.inner, bias=bias, reads=source)
        if kv_first:
            q = b.gemm(f"{prefix}.q", layer, "q", "attention", q_rows, s.hidden, s.inner, bias=bias, reads=x)
    if cached:
        k = b.state(f"{prefix}.k_cache", kv_rows * s.inner, source=k)
        v = b.state(f"{prefix}.v_cache", kv_rows * s.inner, source=v)
    if after_projections is not None:
        position_bias = after_projections()
    if scale == "query":
        q = b.vector(f"{prefix}.query_scale", layer, "mul", "attention", q_rows * s.inner, reads=(q,))
    score_elements = s.batch * s.heads * s.q_len * s.kv_len
    b.bmm(f"{prefix}.qk", layer, "bmm_qk", "attention", s.batch * s.heads, s.q_len, s.head_dim, s.kv_len,
          reads=(q, k))
    if scale == "scores":
        b.vector(f"{prefix}.score_scale", layer, "mul", "attention", score_elements)
    for term in score_adds:  # additive mask / position bias terms, each one add over the scores
        extra = (position_bias,) if term == "position_bias" and position_bias else ()
        b.vector(f"{prefix}.{term}_add", layer, "add", "attention", score_elements, reads=(b.current, *extra))
    b.vector(f"{prefix}.softmax", layer, "softmax", "attention", score_elements)
    b.bmm(f"{prefix}.av", layer, "bmm_av", "attention", s.batch * s.heads, s.q_len, s.kv_len, s.head_dim,
          reads=(b.current, v))
    return b.gemm(f"{prefix}.out", layer, "attn_out", "attention", q_rows, s.inner, s.hidden, bias=bias)


def feed_forward(b: OpBuilder, prefix: str, layer: int, rows: int, hidden: int, inner: int, activation: str,
                 *, bias: bool = True) -> str:
    b.gemm(f"{prefix}.ffn1", layer, "ffn1", "ffn", rows, hidden, inner, bias=bias)
    b.vector(f"{prefix}.{activation}", layer, activation, "ffn", rows * inner)
    return b.gemm(f"{prefix}.ffn2", layer, "ffn2", "ffn", rows, inner, hidden, bias=bias)


def residual(b: OpBuilder, prefix: str, layer: int, group: str, elements: int, skip: str) -> str:
    """The sublayer's output plus its input ``skip``."""
    return b.add(f"{prefix}.residual_add", layer, group, elements, skip)
