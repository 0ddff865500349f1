"""GPT-2 decoder: prefill, or one decode step with a KV cache. The feed-forward's activation is the one
``activation_function`` names (GELU's tanh approximation by default), its width ``n_inner`` (4 x the model's
by default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workloads.blocks import AttentionShape, attention, feed_forward, residual
from workloads.builder import OpBuilder
from workloads.families.base import (
    PHASES,
    Family,
    HfInputs,
    Workload,
    causal_lm_inputs,
    check_context,
    head_rows,
    heads_divide,
)
from workloads.families.config_keys import OptionalKeys, activation, setting


class GPT2Family(Family):
    model_types = ("gpt2",)
    required = ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions")
    optional = OptionalKeys(sizes=("n_inner",), activations=("activation_function",))
    heads = ("lm", "none")
    hf_classes = {"lm": "GPT2LMHeadModel", "none": "GPT2Model"}
    phases = PHASES

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        heads_divide(cfg, "n_embd", "n_head")
        check_context(wl, cfg["n_positions"], "n_positions")
        return wl

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        hidden, heads, batch = cfg["n_embd"], cfg["n_head"], wl.batch
        inner = setting(cfg, "n_inner", 4 * hidden)
        # Prefill: all `tokens` at once. Decode: one new token attending to a cache of `tokens`.
        new, context = (wl.size("tokens"), wl.size("tokens")) if wl.phase == "prefill" else (1, wl.size("tokens") + 1)
        rows = batch * new
        ids = b.input("input_ids", rows, bits=32)
        tokens = b.vector("wte", -1, "embedding", "embedding", rows * hidden,
                          weight_params=cfg["vocab_size"] * hidden, reads=(ids,))
        # Position ids are shared by the batch: one lookup per new position.
        b.vector("wpe", -1, "embedding", "embedding", new * hidden, weight_params=cfg["n_positions"] * hidden,
                 reads=())
        x = b.add("embeddings.add_position", -1, "embedding", rows * hidden, tokens)
        shape = AttentionShape(batch, new, context, hidden, heads, hidden // heads)
        act = activation(cfg, "activation_function", "gelu_new")
        for i in range(cfg["n_layer"]):
            p = f"h.{i}"
            b.layernorm(f"{p}.ln_1", i, "norm", rows, hidden)
            # The causal mask is added to the scores (a decode step's single query sees the whole cache).
            attention(b, f"{p}.attn", i, shape, fused_qkv=True, score_adds=("causal_mask",),
                      cache="step" if wl.phase == "decode" else "fill")
            h = residual(b, f"{p}.attn", i, "attention", rows * hidden, x)
            b.layernorm(f"{p}.ln_2", i, "norm", rows, hidden)
            feed_forward(b, f"{p}.mlp", i, rows, hidden, inner, act)
            x = residual(b, f"{p}.mlp", i, "ffn", rows * hidden, h)
        b.layernorm("ln_f", -1, "norm", rows, hidden)
        if wl.head == "lm":
            # Tied to wte: it reads the embedding table, and owns no parameters of its own.
            b.gemm("lm_head", -1, "head", "head", head_rows(wl, rows, new), hidden, cfg["vocab_size"], bias=False,
                   weight="wte.weight")

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> HfInputs:
        return causal_lm_inputs(wl, torch)
