"""BERT and RoBERTa encoders (``model_type`` bert, roberta); the feed-forward's activation is the one
``hidden_act`` names (GELU by default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workloads.blocks import AttentionShape, attention, feed_forward, residual
from workloads.builder import OpBuilder
from workloads.errors import InputError
from workloads.families.base import (
    Family,
    Workload,
    heads_divide,
)
from workloads.families.config_keys import OptionalKeys, activation, setting


class BertFamily(Family):
    model_types = ("bert", "roberta")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "type_vocab_size")
    optional = OptionalKeys(counts=("pad_token_id",), activations=("hidden_act",))
    heads = ("qa", "pooler", "none")

    @staticmethod
    def _position_limit(cfg: Mapping[str, Any]) -> int:
        # RoBERTa numbers positions from padding_idx + 1.
        if cfg["model_type"] != "roberta":
            return int(cfg["max_position_embeddings"])
        positions, pad = int(cfg["max_position_embeddings"]), setting(cfg, "pad_token_id", 1)
        if positions - pad - 1 < 1:
            raise InputError(f"pad_token_id={pad} leaves RoBERTa none of its max_position_embeddings={positions} "
                             "positions (they are numbered from pad_token_id + 1)")
        return positions - pad - 1

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        heads_divide(cfg, "hidden_size", "num_attention_heads")
        if wl.size("tokens") > self._position_limit(cfg):
            raise InputError(f"tokens={wl.tokens} exceeds the model's {self._position_limit(cfg)} positions")
        return wl

    def hf_class(self, cfg: Mapping[str, Any], head: str) -> str:
        prefix = "Bert" if cfg["model_type"] == "bert" else "Roberta"
        return f"{prefix}ForQuestionAnswering" if head == "qa" else f"{prefix}Model"

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        hidden, inner = cfg["hidden_size"], cfg["intermediate_size"]
        heads, seq, batch = cfg["num_attention_heads"], wl.size("tokens"), wl.batch
        rows = batch * seq
        act = activation(cfg, "hidden_act", "gelu")
        ids = b.input("input_ids", rows, bits=32)
        word = b.vector("embeddings.word", -1, "embedding", "embedding", rows * hidden,
                        weight_params=cfg["vocab_size"] * hidden, reads=(ids,))
        token_type = b.vector("embeddings.token_type", -1, "embedding", "embedding", rows * hidden,
                              weight_params=cfg["type_vocab_size"] * hidden, reads=())
        summed = b.vector("embeddings.add_token_type", -1, "add", "embedding", rows * hidden, reads=(word, token_type))
        # BERT looks positions up once per sequence position (broadcast over the batch); RoBERTa derives
        # them from each sequence's token ids.
        position_rows = rows if cfg["model_type"] == "roberta" else seq
        b.vector("embeddings.position", -1, "embedding", "embedding", position_rows * hidden,
                 weight_params=cfg["max_position_embeddings"] * hidden,
                 reads=(ids,) if cfg["model_type"] == "roberta" else ())
        b.add("embeddings.add_position", -1, "embedding", rows * hidden, summed)
        x = b.layernorm("embeddings.layernorm", -1, "norm", rows, hidden)
        shape = AttentionShape(batch, seq, seq, hidden, heads, hidden // heads)
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            attention(b, f"{p}.attention", i, shape)
            residual(b, f"{p}.attention", i, "attention", rows * hidden, x)
            h = b.layernorm(f"{p}.attention.layernorm", i, "norm", rows, hidden)
            feed_forward(b, f"{p}.ffn", i, rows, hidden, inner, act)
            residual(b, f"{p}.ffn", i, "ffn", rows * hidden, h)
            x = b.layernorm(f"{p}.ffn.layernorm", i, "norm", rows, hidden)
        if wl.head == "pooler":
            b.gemm("pooler.dense", -1, "pooler", "head", batch, hidden, hidden)
            b.vector("pooler.tanh", -1, "tanh", "head", batch * hidden)
        elif wl.head == "qa":
            b.gemm("qa_outputs", -1, "head", "head", rows, hidden, 2)
