"""OPT decoders (Zhang et al. 2022; seed 002 measures OPT-13B): learned positions, ReLU FFN, tied head.

One block (pre-LN, as every OPT size but 350m; ``do_layer_norm_before: false`` puts each LayerNorm
after its residual instead): LayerNorm, q/k/v projections with biases, q scaled by 1/sqrt(d) after its
projection, scores plus the causal mask, softmax, output projection, residual; LayerNorm, fc1, ReLU
(the activation ``activation_function`` names), fc2, residual. Positions are looked up per sequence in a
table of ``max_position_embeddings + 2`` rows (OPT's offset of 2). Hugging Face also multiplies the scores
by 1.0; an accelerator does not, so that multiply is left out. Phases: a prefill of ``tokens``, or one
decode step with a KV cache.
"""

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

POSITION_OFFSET = 2  # OPT's learned position table has two extra rows (fairseq's padding convention)


class OPTFamily(Family):
    model_types = ("opt",)
    required = ("vocab_size", "hidden_size", "ffn_dim", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings")
    optional = OptionalKeys(sizes=("word_embed_proj_dim",), activations=("activation_function",),
                            flags=("do_layer_norm_before", "layer_norm_elementwise_affine", "enable_bias",
                                   "_remove_final_layer_norm"))
    heads = ("lm", "none")
    hf_classes = {"lm": "OPTForCausalLM", "none": "OPTModel"}
    phases = PHASES
    default_tokens = 512

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        heads_divide(cfg, "hidden_size", "num_attention_heads")
        check_context(wl, cfg["max_position_embeddings"], "max_position_embeddings")
        return wl

    @staticmethod
    def embeddings(cfg: Mapping[str, Any], b: OpBuilder, rows: int, words: int) -> str:
        """Token embeddings (projected in when narrower than the model) plus learned positions."""
        hidden = cfg["hidden_size"]
        ids = b.input("input_ids", rows, bits=32)
        tokens = b.vector("embed_tokens", -1, "embedding", "embedding", rows * words,
                          weight_params=cfg["vocab_size"] * words, reads=(ids,))
        positions = b.vector("embed_positions", -1, "embedding", "embedding", rows * hidden,
                             weight_params=(cfg["max_position_embeddings"] + POSITION_OFFSET) * hidden, reads=())
        if words != hidden:
            tokens = b.gemm("project_in", -1, "feature_proj", "embedding", rows, words, hidden, bias=False,
                            reads=tokens)
        b.current = tokens
        return b.add("embeddings.add_positions", -1, "embedding", rows * hidden, positions)

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        hidden, heads, batch = cfg["hidden_size"], cfg["num_attention_heads"], wl.batch
        words = setting(cfg, "word_embed_proj_dim", hidden)
        pre_norm = setting(cfg, "do_layer_norm_before", True)
        affine = setting(cfg, "layer_norm_elementwise_affine", True)
        bias = setting(cfg, "enable_bias", True)
        new, context = (wl.size("tokens"), wl.size("tokens")) if wl.phase == "prefill" else (1, wl.size("tokens") + 1)
        rows = batch * new
        x = self.embeddings(cfg, b, rows, words)
        shape = AttentionShape(batch, new, context, hidden, heads, hidden // heads)
        act = activation(cfg, "activation_function", "relu")

        def norm(name: str, layer: int) -> str:
            if affine:
                return b.layernorm(name, layer, "norm", rows, hidden)
            return b.vector(name, layer, "layernorm", "norm", rows * hidden)

        for i in range(cfg["num_hidden_layers"]):
            p = f"layers.{i}"
            if pre_norm:
                norm(f"{p}.self_attn_layer_norm", i)
            attention(b, f"{p}.self_attn", i, shape, bias=bias, scale="query", score_adds=("causal_mask",),
                      cache="step" if wl.phase == "decode" else "fill")
            h = residual(b, f"{p}.self_attn", i, "attention", rows * hidden, x)
            if pre_norm:
                norm(f"{p}.final_layer_norm", i)
            else:
                h = norm(f"{p}.self_attn_layer_norm", i)
            feed_forward(b, f"{p}.fc", i, rows, hidden, cfg["ffn_dim"], act, bias=bias)
            x = residual(b, f"{p}.fc", i, "ffn", rows * hidden, h)
            if not pre_norm:
                x = norm(f"{p}.final_layer_norm", i)
        if pre_norm and not setting(cfg, "_remove_final_layer_norm", False):
            norm("final_layer_norm", -1)
        if words != hidden:
            b.gemm("project_out", -1, "feature_proj", "embedding", rows, hidden, words, bias=False)
        if wl.head == "lm":  # tied to the token embedding
            b.gemm("lm_head", -1, "head", "head", head_rows(wl, rows, new), words, cfg["vocab_size"], bias=False,
                   weight="embed_tokens.weight")

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> HfInputs:
        return causal_lm_inputs(wl, torch)
