"""Llama-style decoders (Llama 2 and 3, Qwen2, Mistral; Mixtral in :mod:`.mixtral`): RMSNorm, rotary
positions, SwiGLU, grouped-query attention.

One block: RMSNorm, q/k/v projections (biased in Qwen2), RoPE on q and k, attention (scores scaled,
causal mask added, softmax), output projection, residual; RMSNorm, SwiGLU (gate and up projections,
SiLU of the gate times the up projection, down projection), residual. The rotary cos/sin tables are
computed once per pass, per position (shared by the batch). The LM head is untied (Llama) or tied to
the token embedding (``tie_word_embeddings``, as in small Qwen2 models).

Phases: a prefill of ``tokens``, or one decode step with a KV cache of ``tokens`` (the new token's keys
and values appended). Mistral's sliding window W: the cache keeps the last W - 1 tokens (as Hugging Face
keeps them), from the prefill on, and a decode step attends to those and its own (at most W); a prefill
computes every score and masks those outside the window, as Hugging Face's eager attention does (a
banded kernel would skip them). ``rope_scaling`` is accepted; the context limit is
``max_position_embeddings`` (Llama 3.1-style configs already state their extended length there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workloads.blocks import AttentionShape, attention, residual
from workloads.errors import InputError
from workloads.families.base import PHASES, Family, HfInputs, Workload, causal_lm_inputs, check_context, head_rows
from workloads.ops import OpBuilder


def head_dim(cfg: Mapping[str, Any]) -> int:
    """``head_dim`` when the config states it, else hidden / heads (which must divide)."""
    if cfg.get("head_dim"):
        return int(cfg["head_dim"])
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    if hidden % heads:
        raise InputError(f"num_attention_heads={heads} does not divide hidden_size={hidden}")
    return int(hidden // heads)


def kv_heads(cfg: Mapping[str, Any]) -> int:
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    if heads % kv:
        raise InputError(f"num_key_value_heads={kv} does not divide num_attention_heads={heads}")
    return int(kv)


def sliding_window(cfg: Mapping[str, Any]) -> int | None:
    """Mistral's attention window in keys (None: full attention)."""
    window = cfg.get("sliding_window") if cfg["model_type"] in ("mistral", "mixtral") else None
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
        raise InputError(f"sliding_window must be a positive integer, got {window!r}")
    return window


def rmsnorm(b: OpBuilder, name: str, layer: int, rows: int, width: int) -> str:
    return b.vector(name, layer, "rmsnorm", "norm", rows * width, weight_params=width)


def swiglu(b: OpBuilder, prefix: str, layer: int, rows: int, hidden: int, inner: int, bias: bool) -> str:
    """down(silu(gate(x)) x up(x)), in the order Hugging Face evaluates it."""
    x = b.current
    gate = b.gemm(f"{prefix}.gate_proj", layer, "ffn1", "ffn", rows, hidden, inner, bias=bias, reads=x)
    act = b.vector(f"{prefix}.silu", layer, "silu", "ffn", rows * inner, reads=(gate,))
    up = b.gemm(f"{prefix}.up_proj", layer, "ffn1", "ffn", rows, hidden, inner, bias=bias, reads=x)
    b.vector(f"{prefix}.gate_mul", layer, "mul", "ffn", rows * inner, reads=(act, up))
    return b.gemm(f"{prefix}.down_proj", layer, "ffn2", "ffn", rows, inner, hidden, bias=bias)


class LlamaFamily(Family):
    model_types: tuple[str, ...] = ("llama", "qwen2", "mistral")
    required: tuple[str, ...] = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                 "num_attention_heads", "max_position_embeddings")
    heads = ("lm", "none")
    hf_classes = {"lm": "AutoModelForCausalLM", "none": "AutoModel"}
    phases = PHASES
    default_tokens = 512

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        if cfg.get("use_sliding_window"):
            raise InputError(f"{cfg['model_type']}: sliding-window attention (use_sliding_window) is not modelled "
                             "for this family yet")
        head_dim(cfg), kv_heads(cfg)
        check_context(wl, cfg["max_position_embeddings"], "max_position_embeddings")
        return wl

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        hidden, heads, batch = cfg["hidden_size"], cfg["num_attention_heads"], wl.batch
        dim = head_dim(cfg)
        # Prefill: all `tokens` at once. Decode: one new token attending to a cache of `tokens`.
        new, context = (wl.size("tokens"), wl.size("tokens")) if wl.phase == "prefill" else (1, wl.size("tokens") + 1)
        window = sliding_window(cfg)
        kept = None if window is None else min(wl.size("tokens") + (wl.phase == "decode"), window - 1)
        if wl.phase == "decode" and window is not None:
            context = min(context, window)
        rows = batch * new
        qwen2 = cfg["model_type"] == "qwen2"  # biased q/k/v projections, unbiased output projection
        bias = qwen2 or bool(cfg.get("attention_bias", False))
        ids = b.input("input_ids", rows, bits=32)
        x = b.vector("embed_tokens", -1, "embedding", "embedding", rows * hidden,
                     weight_params=cfg["vocab_size"] * hidden, reads=(ids,))
        # cos and sin of every new position (position x inverse frequency), shared by the batch.
        table = b.vector("rotary_emb", -1, "rope_table", "embedding", 2 * new * dim, reads=())
        shape = AttentionShape(batch, new, context, hidden, heads, dim, kv_heads(cfg), cache_len=kept)
        for i in range(cfg["num_hidden_layers"]):
            p = f"layers.{i}"
            b.current = x
            rmsnorm(b, f"{p}.input_layernorm", i, rows, hidden)
            attention(b, f"{p}.self_attn", i, shape, bias=bias, out_bias=bias and not qwen2,
                      score_adds=("causal_mask",), cache="step" if wl.phase == "decode" else "fill", rope=table)
            h = residual(b, f"{p}.self_attn", i, "attention", rows * hidden, x)
            rmsnorm(b, f"{p}.post_attention_layernorm", i, rows, hidden)
            self.feed_forward(b, cfg, wl, f"{p}.mlp", i, rows)
            x = residual(b, f"{p}.mlp", i, "ffn", rows * hidden, h)
        rmsnorm(b, "norm", -1, rows, hidden)
        if wl.head == "lm":
            tied = cfg.get("tie_word_embeddings", False)
            b.gemm("lm_head", -1, "head", "head", head_rows(wl, rows, new), hidden, cfg["vocab_size"], bias=False,
                   weight="embed_tokens.weight" if tied else None)

    def feed_forward(self, b: OpBuilder, cfg: Mapping[str, Any], wl: Workload, prefix: str, layer: int,
                     rows: int) -> None:
        """The block's feed-forward sublayer on ``rows`` tokens (after its norm, before its residual)."""
        swiglu(b, prefix, layer, rows, cfg["hidden_size"], cfg["intermediate_size"], bool(cfg.get("mlp_bias", False)))

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> HfInputs:
        return causal_lm_inputs(wl, torch)
