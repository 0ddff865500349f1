"""T5 encoder-decoder (relative position buckets, RMS-style layer norm).

Phases: a prefill runs the encoder over ``tokens`` and the decoder over ``decoder_tokens``, filling the
decoder's self-attention cache and each block's cross-attention cache (the encoder output's keys and
values); a decode step runs the decoder alone on one new token, against a self-attention cache of
``decoder_tokens`` and the cross-attention cache of ``tokens``.

Relative position buckets set no hard limit on lengths; the config's ``n_positions`` (the length the
model was trained at, 512 for the original checkpoints) bounds both stacks where it is given, so a
generation cannot run without end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from workloads.blocks import AttentionShape, attention, feed_forward, residual
from workloads.builder import OpBuilder
from workloads.errors import InputError
from workloads.families.base import PHASES, Family, HfInputs, Workload, encoder_decoder_inputs, head_rows
from workloads.families.config_keys import OptionalKeys, setting


class T5Family(Family):
    model_types = ("t5",)
    required = ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers",
                "relative_attention_num_buckets")
    optional = OptionalKeys(sizes=("n_positions", "num_decoder_layers"), flags=("tie_word_embeddings",))
    heads = ("lm", "none")
    hf_classes = {"lm": "T5ForConditionalGeneration", "none": "T5Model"}
    knobs = ("tokens", "decoder_tokens")
    phases = PHASES
    cache_knob = "decoder_tokens"

    def check(self, cfg: Mapping[str, Any], where: str) -> None:
        super().check(cfg, where)
        if cfg.get("feed_forward_proj", "relu") not in ("relu", "gelu"):
            raise InputError(f"{where}: feed_forward_proj {cfg['feed_forward_proj']!r} is not supported "
                             "(supported: relu, gelu)")

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        wl = replace(wl, decoder_tokens=wl.decoder_tokens or wl.tokens)
        positions = cfg.get("n_positions")
        if positions is not None:
            decoder = wl.size("decoder_tokens") + (1 if wl.phase == "decode" else 0)
            for what, length in (("an encoder input", wl.size("tokens")), ("a decoder context", decoder)):
                if length > positions:
                    raise InputError(f"{what} of {length} tokens exceeds the model's {positions} positions "
                                     "(n_positions)")
        return wl

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        d_model, d_ff, heads, d_kv = cfg["d_model"], cfg["d_ff"], cfg["num_heads"], cfg["d_kv"]
        buckets, vocab, batch = cfg["relative_attention_num_buckets"], cfg["vocab_size"], wl.batch
        act = cfg.get("feed_forward_proj", "relu")
        decode = wl.phase == "decode"
        src = wl.size("tokens")
        decoder_tokens = wl.size("decoder_tokens")
        tgt, context = (1, decoder_tokens + 1) if decode else (decoder_tokens, decoder_tokens)
        cache = "step" if decode else "fill"
        enc_layers = cfg["num_layers"]
        dec_layers = setting(cfg, "num_decoder_layers", enc_layers)
        tied = setting(cfg, "tie_word_embeddings", True)

        ids = None if decode else b.input("input_ids", batch * src, bits=32)
        decoder_ids = b.input("decoder_input_ids", batch * tgt, bits=32)

        def stack(name: str, first: int, layers: int, seq: int, cross: str | None, ids: str) -> str:
            """One stack; ``cross`` is the encoder output a decoder stack attends to (None in a decode step:
            its keys and values are cached)."""
            decoder = name == "decoder"
            rows, keys = batch * seq, context if decoder else seq
            embedding = {"weight": "encoder.embed_tokens.weight"} if decoder else {"weight_params": vocab * d_model}
            if decode:  # the table is owned by the encoder's lookup, which a decode step does not run
                embedding = {"weight_params": vocab * d_model}
            b.vector(f"{name}.embed_tokens", -1, "embedding", "embedding", rows * d_model, reads=(ids,), **embedding)
            x = b.current
            self_shape = AttentionShape(batch, seq, keys, d_model, heads, d_kv)
            cross_shape = AttentionShape(batch, seq, src, d_model, heads, d_kv)
            position_bias = None  # computed by the first block, reused by the others
            for j in range(layers):
                i, p = first + j, f"{name}.block.{j}"
                b.layernorm(f"{p}.self_attention.layernorm", i, "norm", rows, d_model, bias=False)
                lookup = (lambda p=p, i=i, seq=seq, keys=keys: b.vector(
                    f"{p}.relative_attention_bias", i, "embedding", "attention", seq * keys * heads,
                    weight_params=buckets * heads, reads=())) if j == 0 else None
                adds = ("position_bias", "causal_mask") if decoder else ("position_bias",)
                attention(b, f"{p}.self_attention", i, self_shape, bias=False, scale=None, score_adds=adds,
                          after_projections=lookup, position_bias=position_bias, cache=cache if decoder else "")
                position_bias = position_bias or f"{p}.relative_attention_bias"
                x = residual(b, f"{p}.self_attention", i, "attention", rows * d_model, x)
                if decoder:
                    b.layernorm(f"{p}.cross_attention.layernorm", i, "norm", rows, d_model, bias=False)
                    attention(b, f"{p}.cross_attention", i, cross_shape, bias=False, scale=None,
                              score_adds=("position_bias",), memory=cross or "encoder_output", cache=cache)
                    x = residual(b, f"{p}.cross_attention", i, "attention", rows * d_model, x)
                b.layernorm(f"{p}.ffn.layernorm", i, "norm", rows, d_model, bias=False)
                feed_forward(b, f"{p}.ffn", i, rows, d_model, d_ff, act, bias=False)
                x = residual(b, f"{p}.ffn", i, "ffn", rows * d_model, x)
            return b.layernorm(f"{name}.final_layernorm", -1, "norm", rows, d_model, bias=False)

        encoded = None if ids is None else stack("encoder", 0, enc_layers, src, None, ids)  # none in a decode step
        stack("decoder", enc_layers, dec_layers, tgt, encoded, decoder_ids)
        if wl.head == "lm":
            rows = head_rows(wl, batch * tgt, tgt)
            if tied:
                b.vector("lm_head.scale", -1, "mul", "head", rows * d_model)
            table = "decoder.embed_tokens.weight" if decode else "encoder.embed_tokens.weight"
            b.gemm("lm_head", -1, "head", "head", rows, d_model, vocab, bias=False, weight=table if tied else None)

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> HfInputs:
        return encoder_decoder_inputs(wl, torch)
