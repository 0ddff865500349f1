"""Building blocks shared by the model families: attention, feed-forward, residuals.

Each helper appends ops in the order Hugging Face's eager implementation executes them, so that a
closed-form trace can be compared op by op with a traced one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workloads.attention_geometry import AttentionGeometry
from workloads.builder import OpBuilder


@dataclass(frozen=True)
class AttentionShape:
    """One multi-head attention: ``batch`` sequences, queries of ``q_len`` and keys of ``kv_len`` tokens."""

    batch: int
    q_len: int
    kv_len: int
    hidden: int  # model width (input of the projections, output of attn_out)
    heads: int
    head_dim: int
    kv_heads: int = 0  # grouped-query attention: key/value heads (0: one per query head)
    cache_len: int | None = None  # tokens the KV cache keeps after the pass (None: kv_len; less with a window)
    window: int = 0  # a sliding window: keys a query attends to at most, itself included (0: none)

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_inner(self) -> int:
        return (self.kv_heads or self.heads) * self.head_dim

    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return self.heads // (self.kv_heads or self.heads)


def attention(b: OpBuilder, prefix: str, layer: int, shape: AttentionShape, *, bias: bool = True,
              fused_qkv: bool = False, kv_first: bool = False, scale: str | None = "scores",
              score_adds: tuple[str, ...] = (), memory: str | None = None, position_bias: str | None = None,
              cache: str = "", after_projections: Callable[[], str] | None = None,
              rope: str | None = None, out_bias: bool | None = None) -> str:
    """Projections, QK^T, optional scaling and additive mask/position bias, softmax, AV, output projection.

    The projections read the current activation; in cross-attention k and v read ``memory`` (the encoder
    output). ``scale`` is where 1/sqrt(d) is applied: on the scores ("scores"), on the projected
    queries ("query") or nowhere (None, as in T5). ``score_adds`` names the additive terms added to
    the scores one after the other: "position_bias" adds the tensor ``position_bias`` (or the one
    ``after_projections`` computes), other terms (a causal mask) are generated on the fly.
    ``kv_first`` computes the key/value projections before the query projection. ``cache``: "fill" (a
    prefill) writes the keys and values to this layer's KV cache (state the next steps read); "step" (a
    decode step) appends the new token's keys and values to the cache and the BMMs read all of it; in
    cross-attention (``memory``) "fill" caches the projected encoder keys and values and "step" reads
    that cache without projecting anything but the queries.
    ``rope`` names the rotary table (cos and sin per position) that rotates the new queries and keys
    before the scores. ``out_bias`` (default: ``bias``) says whether the output projection has biases.
    Returns the output tensor.

    Grouped-query attention (``kv_heads`` < ``heads``) runs one product per key/value head, with the
    queries of its group of heads stacked as rows: each key and value head is read once per group, as an
    accelerator would (Hugging Face's eager code copies K/V to every query head, ``repeat_kv``).
    """
    if cache not in ("", "fill", "step"):
        raise ValueError(f"unknown cache mode {cache!r}")
    s = shape
    q_rows, kv_rows = s.batch * s.q_len, s.batch * s.kv_len
    cached = cache == "step"
    q, k, v = _projections(b, prefix, layer, s, bias=bias, fused_qkv=fused_qkv, kv_first=kv_first, memory=memory,
                           cached=cached)
    if rope is not None:  # q then k, each x cos + rotate_half(x) x sin
        q = b.vector(f"{prefix}.q_rope", layer, "rope", "attention", q_rows * s.inner, reads=(q, rope))
        k = b.vector(f"{prefix}.k_rope", layer, "rope", "attention", (q_rows if cached else kv_rows) * s.kv_inner,
                     reads=(k, rope))
    if cache and not (cached and memory is not None):
        kept_rows = kv_rows if s.cache_len is None else s.batch * s.cache_len
        k_cache = b.state(f"{prefix}.k_cache", kept_rows * s.kv_inner, source=k)
        v_cache = b.state(f"{prefix}.v_cache", kept_rows * s.kv_inner, source=v)
        if cached:
            k, v = k_cache, v_cache
    if after_projections is not None:
        position_bias = after_projections()
    if scale == "query":
        q = b.vector(f"{prefix}.query_scale", layer, "mul", "attention", q_rows * s.inner, reads=(q,))
    # Decoder stacks attend causally to themselves and fully to an encoder's output (``memory``).
    decoder = bool(cache) or memory is not None
    geometry = AttentionGeometry(s.batch * s.heads // s.group, s.group, s.q_len, s.head_dim,
                                 causal=decoder and memory is None, window=s.window, decoder=decoder)
    _scores_and_values(b, prefix, layer, s, q, k, v, scale=scale, score_adds=score_adds, position_bias=position_bias,
                       geometry=geometry)
    return b.gemm(f"{prefix}.out", layer, "attn_out", "attention", q_rows, s.inner, s.hidden,
                  bias=bias if out_bias is None else out_bias)


def mixed_attention(b: OpBuilder, prefix: str, layer: int, shapes: tuple[AttentionShape, ...],
                    fresh: tuple[bool, ...], *, bias: bool, rope: str | None, out_bias: bool,
                    scale: str = "scores") -> str:
    """Self-attention of a mixed batch (:mod:`workloads.mixed`): ``shapes`` are its kinds of sequence, each
    ``batch`` sequences of ``q_len`` new tokens against ``kv_len`` keys. The projections, the rotations by
    the ``rope`` table (if any) and a ``scale`` of the queries (``"query"``; else the scores are scaled) run
    once over all new tokens (v last) and write each kind's rows apart; each kind appends its new keys and
    values to its own cache and runs its products and score ops apart, a ``fresh`` prompt against its own
    new keys (as a prefill), any other against its cache (as a decode step). The kinds' outputs are gathered
    for the output projection (a copy on the vector unit, with more than one kind)."""
    if scale not in ("scores", "query"):
        raise ValueError(f"unknown scale {scale!r}")
    head = shapes[0]
    rows = tuple(s.batch * s.q_len for s in shapes)
    tokens, parts = sum(rows), tuple(f"seq{index}" for index in range(len(shapes)))

    def split(width: int) -> dict[str, Any]:  # an op writing each kind's rows apart
        return {"parts": parts, "part_elements": tuple(r * width for r in rows)}

    x = b.current
    rotated, scaled = rope is not None, scale == "query"
    q = b.gemm(f"{prefix}.q", layer, "q", "attention", tokens, head.hidden, head.inner, bias=bias, reads=x,
               **({} if rotated or scaled else split(head.inner)))
    k = b.gemm(f"{prefix}.k", layer, "k", "attention", tokens, head.hidden, head.kv_inner, bias=bias, reads=x,
               **({} if rotated else split(head.kv_inner)))
    if rope is not None:
        q = b.vector(f"{prefix}.q_rope", layer, "rope", "attention", tokens * head.inner, reads=(q, rope),
                     **({} if scaled else split(head.inner)))
        k = b.vector(f"{prefix}.k_rope", layer, "rope", "attention", tokens * head.kv_inner, reads=(k, rope),
                     **split(head.kv_inner))
    if scaled:
        q = b.vector(f"{prefix}.query_scale", layer, "mul", "attention", tokens * head.inner, reads=(q,),
                     **split(head.inner))
    # v last: no kind's first step then reads a tensor the step before it wrote (it would stream it to the
    # first kind alone)
    v = b.gemm(f"{prefix}.v", layer, "v", "attention", tokens, head.hidden, head.kv_inner, bias=bias, reads=x,
               **split(head.kv_inner))
    outputs = []
    for part, s, new in zip(parts, shapes, fresh, strict=True):
        keys, values = f"{k}.{part}", f"{v}.{part}"
        kept = s.batch * (s.kv_len if s.cache_len is None else s.cache_len) * s.kv_inner
        k_cache = b.state(f"{prefix}.{part}.k_cache", kept, source=keys, sequences=s.batch)
        v_cache = b.state(f"{prefix}.{part}.v_cache", kept, source=values, sequences=s.batch)
        if not new:
            keys, values = k_cache, v_cache
        geometry = AttentionGeometry(s.batch * s.heads // s.group, s.group, s.q_len, s.head_dim, causal=True,
                                     window=s.window, decoder=True)
        _scores_and_values(b, f"{prefix}.{part}", layer, s, f"{q}.{part}", keys, values,
                           scale=None if scaled else "scores", score_adds=("causal_mask",), position_bias=None,
                           geometry=geometry)
        outputs.append(b.current)
    if len(outputs) > 1:
        b.vector(f"{prefix}.gather", layer, "concat", "attention", tokens * head.inner, reads=tuple(outputs))
    return b.gemm(f"{prefix}.out", layer, "attn_out", "attention", tokens, head.inner, head.hidden, bias=out_bias)


def _projections(b: OpBuilder, prefix: str, layer: int, s: AttentionShape, *, bias: bool, fused_qkv: bool,
                 kv_first: bool, memory: str | None, cached: bool) -> tuple[str, str, str]:
    """The q, k and v tensors: one fused GEMM, three (k and v from ``memory`` in cross-attention), or, in a
    cross-attention decode step, q alone against the cached k and v."""
    q_rows, kv_rows = s.batch * s.q_len, s.batch * s.kv_len
    x = b.current
    source = memory or x
    if fused_qkv:
        if memory is not None:
            raise ValueError("a fused q/k/v projection reads one input")
        b.gemm(f"{prefix}.qkv", layer, "qkv", "attention", q_rows, s.hidden, 3 * s.inner, bias=bias,
               parts=("q", "k", "v"))
        q, k, v = (f"{prefix}.qkv.{part}" for part in "qkv")
        return q, k, v
    if cached and memory is not None:  # cross-attention in a decode step: k and v were cached by the first
        q = b.gemm(f"{prefix}.q", layer, "q", "attention", q_rows, s.hidden, s.inner, bias=bias, reads=x)
        return q, b.state(f"{prefix}.k_cache", kv_rows * s.kv_inner), b.state(f"{prefix}.v_cache", kv_rows * s.kv_inner)
    new_rows = q_rows if cached else kv_rows  # a decode step projects only the new tokens
    if not kv_first:
        q = b.gemm(f"{prefix}.q", layer, "q", "attention", q_rows, s.hidden, s.inner, bias=bias, reads=x)
    k = b.gemm(f"{prefix}.k", layer, "k", "attention", new_rows, s.hidden, s.kv_inner, bias=bias, reads=source)
    v = b.gemm(f"{prefix}.v", layer, "v", "attention", new_rows, s.hidden, s.kv_inner, bias=bias, reads=source)
    if kv_first:
        q = b.gemm(f"{prefix}.q", layer, "q", "attention", q_rows, s.hidden, s.inner, bias=bias, reads=x)
    return q, k, v


def _scores_and_values(b: OpBuilder, prefix: str, layer: int, s: AttentionShape, q: str, k: str, v: str, *,
                       scale: str | None, score_adds: tuple[str, ...], position_bias: str | None,
                       geometry: AttentionGeometry) -> None:
    """QK^T, its scaling and additive terms, softmax and AV (grouped-query heads stacked as rows); each
    op carries the attention's ``geometry``."""
    score_elements = s.batch * s.heads * s.q_len * s.kv_len
    products, rows = s.batch * s.heads // s.group, s.group * s.q_len
    b.bmm(f"{prefix}.qk", layer, "bmm_qk", "attention", products, rows, s.head_dim, s.kv_len, reads=(q, k),
          attention=geometry)
    if scale == "scores":
        b.vector(f"{prefix}.score_scale", layer, "mul", "attention", score_elements, attention=geometry)
    for term in score_adds:  # additive mask / position bias terms, each one add over the scores
        extra = (position_bias,) if term == "position_bias" and position_bias else ()
        b.vector(f"{prefix}.{term}_add", layer, "add", "attention", score_elements, reads=(b.current, *extra),
                 attention=geometry)
    b.vector(f"{prefix}.softmax", layer, "softmax", "attention", score_elements, attention=geometry)
    b.bmm(f"{prefix}.av", layer, "bmm_av", "attention", products, rows, s.kv_len, s.head_dim, reads=(b.current, v),
          attention=geometry)


def feed_forward(b: OpBuilder, prefix: str, layer: int, rows: int, hidden: int, inner: int, activation: str,
                 *, bias: bool = True) -> str:
    b.gemm(f"{prefix}.ffn1", layer, "ffn1", "ffn", rows, hidden, inner, bias=bias)
    b.vector(f"{prefix}.{activation}", layer, activation, "ffn", rows * inner)
    return b.gemm(f"{prefix}.ffn2", layer, "ffn2", "ffn", rows, inner, hidden, bias=bias)


def residual(b: OpBuilder, prefix: str, layer: int, group: str, elements: int, skip: str) -> str:
    """The sublayer's output plus its input ``skip``."""
    return b.add(f"{prefix}.residual_add", layer, group, elements, skip)
