"""OPT decoders (Zhang et al. 2022; seed 002 measures OPT-13B): learned positions, ReLU FFN, tied head.

One block (pre-LN, as every OPT size but 350m; ``do_layer_norm_before: false`` puts each LayerNorm
after its residual instead): LayerNorm, q/k/v projections with biases, q scaled by 1/sqrt(d) after its
projection, scores plus the causal mask, softmax, output projection, residual; LayerNorm, fc1, ReLU
(the activation ``activation_function`` names), fc2, residual. Positions are looked up per sequence in a
table of ``max_position_embeddings + 2`` rows (OPT's offset of 2). Hugging Face also multiplies the scores
by 1.0; an accelerator does not, so that multiply is left out. Phases: a prefill of ``tokens``, or one
decode step with a KV cache; or a serving iteration's mixed batch (:mod:`workloads.mixed`), its attention
apart for each kind of sequence (:func:`workloads.blocks.mixed_attention`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from workloads.blocks import AttentionShape, attention, feed_forward, mixed_attention, residual
from workloads.builder import OpBuilder
from workloads.errors import InputError
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
from workloads.mixed import MixedBatch

Attend = Callable[[str, int], None]  # builds a block's attention: its prefix and layer

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
    mixed_batches = True

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

    def blocks_alike(self, cfg: Mapping[str, Any]) -> bool:
        return True

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        shape = self._uniform_shape(cfg, wl)
        rows = wl.batch * shape.q_len
        head = head_rows(wl, rows, shape.q_len) if wl.head == "lm" else None
        self._decoder(cfg, b, rows, head, self._uniform_attend(cfg, wl, b))

    def build_mixed(self, cfg: Mapping[str, Any], batch: MixedBatch, b: OpBuilder, tp: int | None = None) -> None:
        """The iteration of a mixed batch (:mod:`workloads.mixed`): its token-wise ops over all new tokens (a
        position looked up for each), each kind of sequence's attention apart; the LM head on the emitting
        sequences' last tokens."""
        self._decoder(cfg, b, batch.tokens, batch.emitting, self._mixed_attend(cfg, batch, b))

    def build_attention(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        """The first block's self-attention of :meth:`build`'s pass, alone (see :meth:`_attention_alone`)."""
        self._attention_alone(cfg, b, wl.batch * self._uniform_shape(cfg, wl).q_len, self._uniform_attend(cfg, wl, b))

    def build_mixed_attention(self, cfg: Mapping[str, Any], batch: MixedBatch, b: OpBuilder,
                              tp: int | None = None) -> None:
        """The first block's self-attention of :meth:`build_mixed`'s pass, alone (see :meth:`_attention_alone`)."""
        self._attention_alone(cfg, b, batch.tokens, self._mixed_attend(cfg, batch, b))

    def build_head(self, cfg: Mapping[str, Any], tokens: int, emitting: int, b: OpBuilder,
                   tp: int | None = None) -> None:
        """Never built alone: OPT's LM head is tied to the token embedding (serving then probes a stand-in)."""
        raise InputError("opt: an LM head tied to the embedding is not probed alone")

    @staticmethod
    def _uniform_shape(cfg: Mapping[str, Any], wl: Workload) -> AttentionShape:
        """A prefill's ``tokens`` queries against themselves, or a decode step's one query against a cache of
        ``tokens`` and itself."""
        tokens = wl.size("tokens")
        new, context = (tokens, tokens) if wl.phase == "prefill" else (1, tokens + 1)
        return AttentionShape(wl.batch, new, context, cfg["hidden_size"], cfg["num_attention_heads"], _head_dim(cfg))

    def _uniform_attend(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> Attend:
        bias, shape = _biased(cfg), self._uniform_shape(cfg, wl)

        def attend(prefix: str, layer: int) -> None:
            attention(b, prefix, layer, shape, bias=bias, scale="query", score_adds=("causal_mask",),
                      cache="step" if wl.phase == "decode" else "fill")

        return attend

    @staticmethod
    def _mixed_attend(cfg: Mapping[str, Any], batch: MixedBatch, b: OpBuilder) -> Attend:
        kinds = [kind for kind, _ in batch.key]
        for kind in kinds:
            check_context(Workload(tokens=kind.cached + kind.new - 1, phase="decode"), cfg["max_position_embeddings"],
                          "max_position_embeddings")
        shapes = tuple(AttentionShape(count, kind.new, kind.cached + kind.new, cfg["hidden_size"],
                                      cfg["num_attention_heads"], _head_dim(cfg)) for kind, count in batch.key)
        bias = _biased(cfg)

        def attend(prefix: str, layer: int) -> None:
            mixed_attention(b, prefix, layer, shapes, tuple(kind.cached == 0 for kind in kinds), bias=bias,
                            rope=None, out_bias=bias, scale="query")

        return attend

    def _attention_alone(self, cfg: Mapping[str, Any], b: OpBuilder, rows: int, attend: Attend) -> None:
        """The first block's self-attention sublayer of a pass, alone: its input a hidden state (normed on the
        chip before it, pre-LN), then ``attend``. Serving probes the attention of kinds of sequence on it
        (:mod:`simulator.serving.iteration`)."""
        b.input("hidden_states", rows * cfg["hidden_size"])
        if setting(cfg, "do_layer_norm_before", True):
            self._norm(cfg, b, "layers.0.self_attn_layer_norm", 0, rows)
        attend("layers.0.self_attn", 0)

    @staticmethod
    def _norm(cfg: Mapping[str, Any], b: OpBuilder, name: str, layer: int, rows: int) -> str:
        if setting(cfg, "layer_norm_elementwise_affine", True):
            return b.layernorm(name, layer, "norm", rows, cfg["hidden_size"])
        return b.vector(name, layer, "layernorm", "norm", rows * cfg["hidden_size"])

    def _decoder(self, cfg: Mapping[str, Any], b: OpBuilder, rows: int, head: int | None, attend: Attend) -> None:
        """The embeddings, the blocks (``attend`` builds each one's attention), the final norm and the LM head
        on ``head`` rows (None: no head; 0: none run, and the tied head stores nothing of its own)."""
        hidden = cfg["hidden_size"]
        words = setting(cfg, "word_embed_proj_dim", hidden)
        pre_norm = setting(cfg, "do_layer_norm_before", True)
        bias = _biased(cfg)
        x = self.embeddings(cfg, b, rows, words)
        act = activation(cfg, "activation_function", "relu")
        for i in range(cfg["num_hidden_layers"]):
            p = f"layers.{i}"
            if pre_norm:
                self._norm(cfg, b, f"{p}.self_attn_layer_norm", i, rows)
            attend(f"{p}.self_attn", i)
            h = residual(b, f"{p}.self_attn", i, "attention", rows * hidden, x)
            if pre_norm:
                self._norm(cfg, b, f"{p}.final_layer_norm", i, rows)
            else:
                h = self._norm(cfg, b, f"{p}.self_attn_layer_norm", i, rows)
            feed_forward(b, f"{p}.fc", i, rows, hidden, cfg["ffn_dim"], act, bias=bias)
            x = residual(b, f"{p}.fc", i, "ffn", rows * hidden, h)
            if not pre_norm:
                x = self._norm(cfg, b, f"{p}.final_layer_norm", i, rows)
        if pre_norm and not setting(cfg, "_remove_final_layer_norm", False):
            self._norm(cfg, b, "final_layer_norm", -1, rows)
        if words != hidden:
            b.gemm("project_out", -1, "feature_proj", "embedding", rows, hidden, words, bias=False)
        if head:  # tied to the token embedding
            b.gemm("lm_head", -1, "head", "head", head, words, cfg["vocab_size"], bias=False,
                   weight="embed_tokens.weight")

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> HfInputs:
        return causal_lm_inputs(wl, torch)


def _head_dim(cfg: Mapping[str, Any]) -> int:
    return int(cfg["hidden_size"]) // int(cfg["num_attention_heads"])


def _biased(cfg: Mapping[str, Any]) -> bool:
    """Whether the projections and the feed-forward carry biases (``enable_bias``, as Hugging Face reads it)."""
    return setting(cfg, "enable_bias", True)
