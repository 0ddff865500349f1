"""FSMT encoder-decoder (the transformer-base model of Vaswani et al.).

Phases as T5's (:mod:`.t5`): a prefill runs both stacks and fills the decoder's self- and
cross-attention caches; a decode step runs the decoder on one new token against them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from workloads.blocks import AttentionShape, attention, feed_forward, residual
from workloads.builder import OpBuilder
from workloads.errors import InputError
from workloads.families.base import PHASES, Family, HfInputs, Workload, encoder_decoder_inputs, head_rows, heads_divide
from workloads.families.config_keys import OptionalKeys, activation, setting


class FSMTFamily(Family):
    model_types = ("fsmt",)
    required = ("src_vocab_size", "tgt_vocab_size", "d_model", "encoder_layers", "decoder_layers",
                "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim")
    optional = OptionalKeys(sizes=("max_position_embeddings",), counts=("pad_token_id",),
                            flags=("scale_embedding", "tie_word_embeddings"), activations=("activation_function",))
    heads = ("lm",)  # HF's FSMT decoder always ends in its output projection
    hf_classes = {"lm": "FSMTForConditionalGeneration"}
    knobs = ("tokens", "decoder_tokens")
    phases = PHASES
    cache_knob = "decoder_tokens"

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        wl = replace(wl, decoder_tokens=wl.decoder_tokens or wl.tokens)
        heads_divide(cfg, "d_model", "encoder_attention_heads")
        heads_divide(cfg, "d_model", "decoder_attention_heads")
        limit = setting(cfg, "max_position_embeddings", 1024)
        decoder = wl.size("decoder_tokens") + (1 if wl.phase == "decode" else 0)
        longest = max(wl.size("tokens"), decoder)
        if longest > limit:
            raise InputError(f"a sequence of {longest} tokens exceeds the model's {limit} positions "
                             "(max_position_embeddings)")
        return wl

    def hf_non_trace_params(self, cfg: Mapping[str, Any]) -> int:
        # HF stores the fixed sinusoidal tables (max_position_embeddings + padding_idx + 1 rows) as
        # parameters of both stacks; they are computed, not learned, so traces do not count them.
        return 2 * _table_rows(cfg) * int(cfg["d_model"])

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        d_model, batch = cfg["d_model"], wl.batch
        decode = wl.phase == "decode"
        src = wl.size("tokens")
        decoder_tokens = wl.size("decoder_tokens")
        tgt, context = (1, decoder_tokens + 1) if decode else (decoder_tokens, decoder_tokens)
        cache = "step" if decode else "fill"
        scale = setting(cfg, "scale_embedding", True)
        act = activation(cfg, "activation_function", "relu")
        dec_rows = batch * tgt

        # With tie_word_embeddings, HF ties the encoder's and the decoder's token embeddings and the output
        # projection into one table (Vaswani et al.'s shared source/target vocabulary): counted here once.
        tied = setting(cfg, "tie_word_embeddings", False)
        if tied and cfg["src_vocab_size"] != cfg["tgt_vocab_size"]:
            raise InputError("tie_word_embeddings needs src_vocab_size == tgt_vocab_size")
        decoder_ids = b.input("decoder_input_ids", dec_rows, bits=32)
        table_rows = _table_rows(cfg)
        encoded = None if decode else self._encoder(cfg, wl, b, table_rows)
        positions = b.vector("decoder.embed_positions", -1, "embedding", "embedding", dec_rows * d_model,
                             reads=(decoder_ids,),
                             weight=b.constant("decoder.embed_positions.weight", table_rows * d_model))
        # the shared table is owned by the encoder's lookup, which a decode step does not run
        table = "encoder.embed_tokens.weight" if tied and not decode else None
        b.vector("decoder.embed_tokens", -1, "embedding", "embedding", dec_rows * d_model, reads=(decoder_ids,),
                 weight=table, weight_params=0 if table else cfg["tgt_vocab_size"] * d_model)
        table = "encoder.embed_tokens.weight" if table else ("decoder.embed_tokens.weight" if tied else None)
        if scale:
            b.vector("decoder.embed_scale", -1, "mul", "embedding", dec_rows * d_model)
        b.add("decoder.add_position", -1, "embedding", dec_rows * d_model, positions)
        heads = cfg["decoder_attention_heads"]
        self_shape = AttentionShape(batch, tgt, context, d_model, heads, d_model // heads)
        cross_shape = AttentionShape(batch, tgt, src, d_model, heads, d_model // heads)
        first = cfg["encoder_layers"]
        for j in range(cfg["decoder_layers"]):
            i, p = first + j, f"decoder.layers.{j}"
            _attention_sublayer(b, f"{p}.self_attn", i, self_shape, dec_rows, d_model, cache=cache)
            _attention_sublayer(b, f"{p}.encoder_attn", i, cross_shape, dec_rows, d_model,
                                memory=encoded or "encoder_output", cache=cache)
            _ffn_sublayer(b, p, i, dec_rows, d_model, cfg["decoder_ffn_dim"], act)
        if wl.head == "lm":
            b.gemm("output_projection", -1, "head", "head", head_rows(wl, dec_rows, tgt), d_model,
                   cfg["tgt_vocab_size"], bias=False, weight=table)

    def _encoder(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder, table_rows: int) -> str:
        d_model, batch, src = cfg["d_model"], wl.batch, wl.size("tokens")
        enc_rows = batch * src
        act, scale = activation(cfg, "activation_function", "relu"), setting(cfg, "scale_embedding", True)
        ids = b.input("input_ids", enc_rows, bits=32)
        tokens = b.vector("encoder.embed_tokens", -1, "embedding", "embedding", enc_rows * d_model,
                          weight_params=cfg["src_vocab_size"] * d_model, reads=(ids,))
        if scale:
            tokens = b.vector("encoder.embed_scale", -1, "mul", "embedding", enc_rows * d_model)
        # Sinusoidal position tables: stored (computed at load time), not learned.
        b.vector("encoder.embed_positions", -1, "embedding", "embedding", enc_rows * d_model, reads=(ids,),
                 weight=b.constant("encoder.embed_positions.weight", table_rows * d_model))
        b.add("encoder.add_position", -1, "embedding", enc_rows * d_model, tokens)
        heads = cfg["encoder_attention_heads"]
        shape = AttentionShape(batch, src, src, d_model, heads, d_model // heads)
        for i in range(cfg["encoder_layers"]):
            p = f"encoder.layers.{i}"
            _attention_sublayer(b, f"{p}.self_attn", i, shape, enc_rows, d_model)
            _ffn_sublayer(b, p, i, enc_rows, d_model, cfg["encoder_ffn_dim"], act)
        return b.current

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> HfInputs:
        return encoder_decoder_inputs(wl, torch)


def _attention_sublayer(b: OpBuilder, name: str, layer: int, shape: AttentionShape, rows: int, d_model: int,
                        memory: str | None = None, cache: str = "") -> None:
    """Post-norm attention: FSMT projects k and v before q, scales q, adds the residual, then LayerNorm."""
    x = b.current
    attention(b, name, layer, shape, scale="query", kv_first=True, memory=memory, cache=cache)
    residual(b, name, layer, "attention", rows * d_model, x)
    b.layernorm(f"{name}_layer_norm", layer, "norm", rows, d_model)


def _ffn_sublayer(b: OpBuilder, block: str, layer: int, rows: int, d_model: int, inner: int, act: str) -> None:
    x = b.current
    feed_forward(b, f"{block}.ffn", layer, rows, d_model, inner, act)
    residual(b, f"{block}.ffn", layer, "ffn", rows * d_model, x)
    b.layernorm(f"{block}.final_layer_norm", layer, "norm", rows, d_model)


def _table_rows(cfg: Mapping[str, Any]) -> int:
    """Rows of a sinusoidal position table: max_position_embeddings + padding_idx + 1 (Hugging Face's)."""
    return setting(cfg, "max_position_embeddings", 1024) + setting(cfg, "pad_token_id", 1) + 1
