"""Llama-style decoders (Llama 2 and 3, Qwen2, Mistral; Mixtral in :mod:`.mixtral`): RMSNorm, rotary
positions, SwiGLU, grouped-query attention.

One block: RMSNorm, q/k/v projections (biased in Qwen2), RoPE on q and k, attention (scores scaled,
causal mask added, softmax), output projection, residual; RMSNorm, SwiGLU (gate and up projections,
SiLU of the gate times the up projection, down projection: ``hidden_act`` names the activation, SiLU by
default), residual. The rotary cos/sin tables are
computed once per pass, per position (shared by the batch). The LM head is untied (Llama) or tied to
the token embedding (``tie_word_embeddings``, as in small Qwen2 models).

Phases: a prefill of ``tokens``, or one decode step with a KV cache of ``tokens`` (the new token's keys
and values appended). Mistral's sliding window W: the cache keeps the last W - 1 tokens (as Hugging Face
keeps them), from the prefill on, and a decode step attends to those and its own (at most W); so do
Qwen2's windowed blocks (``use_sliding_window``: from ``max_window_layers`` on, or as ``layer_types``
says). Every op of a block's attention carries its window (the fused kernel computes only the blocks
that meet the band; the materialized one, as Hugging Face's eager code, every score). ``rope_scaling``
is accepted; the context limit is ``max_position_embeddings`` (Llama 3.1-style configs already state
their extended length there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from workloads.blocks import AttentionShape, attention, mixed_attention, residual
from workloads.builder import OpBuilder
from workloads.errors import InputError
from workloads.families.base import PHASES, Family, HfInputs, Workload, causal_lm_inputs, check_context, head_rows
from workloads.families.config_keys import OptionalKeys, activation, setting
from workloads.mixed import MixedBatch, Sequence
from workloads.parallel import ExpertParallel, PipelineStage, TensorParallel

Attend = Callable[[str, int, int | None, str], None]  # builds a block's attention: prefix, layer, window, rope table


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


def layer_windows(cfg: Mapping[str, Any]) -> tuple[int | None, ...]:
    """Each block's attention window in keys (None: full attention). Mistral and Mixtral: ``sliding_window``
    in every block. Qwen2 with ``use_sliding_window``: as Hugging Face's config decides, ``layer_types``
    when given, else the blocks from ``max_window_layers`` on."""
    layers = int(cfg["num_hidden_layers"])
    if cfg["model_type"] in ("mistral", "mixtral"):
        return (_window(cfg),) * layers
    if cfg["model_type"] != "qwen2" or not setting(cfg, "use_sliding_window", False):
        return (None,) * layers
    window = _window(cfg)
    types = cfg.get("layer_types")
    if types is None:
        first = setting(cfg, "max_window_layers", 28)  # Hugging Face's Qwen2Config default
        return tuple(window if i >= first else None for i in range(layers))
    kinds = ("full_attention", "sliding_attention")
    if not isinstance(types, list) or len(types) != layers or any(kind not in kinds for kind in types):
        raise InputError(f"layer_types must list {layers} of {' or '.join(kinds)}, got {types!r}")
    return tuple(window if kind == "sliding_attention" else None for kind in types)


def _window(cfg: Mapping[str, Any]) -> int | None:
    window = cfg.get("sliding_window")  # a size (checked with the config), or None: no window
    return None if window is None else int(window)


def tensor_parallel(wl: Workload) -> TensorParallel:
    """The chips the workload splits the model over (workloads.parallel)."""
    return TensorParallel(wl.tp or 1)


def _chip_shape(cfg: Mapping[str, Any], tp: TensorParallel, batch: int, new: int, keys: int, kept: int | None,
                window: int | None) -> AttentionShape:
    """The attention of one chip of ``tp``: its query heads and its (possibly replicated) key/value heads."""
    return AttentionShape(batch, new, keys, cfg["hidden_size"], tp.columns(cfg["num_attention_heads"],
                                                                             "num_attention_heads"),
                          head_dim(cfg), tp.kv_heads(kv_heads(cfg)), cache_len=kept, window=window or 0)


def _lm_head(b: OpBuilder, cfg: Mapping[str, Any], tp: TensorParallel, rows: int, tied: bool) -> None:
    """The LM head on ``rows`` rows (0: stored, not run), each chip's vocabulary range, gathered over tp."""
    hidden, vocab = cfg["hidden_size"], tp.vocabulary(cfg["vocab_size"])
    if rows:
        b.gemm("lm_head", -1, "head", "head", rows, hidden, vocab, bias=False,
               weight="embed_tokens.weight" if tied else None)
        if tp.split:
            b.collective("lm_head.all_gather", -1, "all_gather", "head", rows * vocab * tp.degree, tp.degree)
    elif not tied:
        b.held("lm_head", -1, "head", "head", 1, hidden, vocab)


def _biases(cfg: Mapping[str, Any]) -> tuple[bool, bool]:
    """(q/k/v projections biased, output projection biased): Qwen2 biases q/k/v only."""
    qwen2 = cfg["model_type"] == "qwen2"
    bias = qwen2 or setting(cfg, "attention_bias", False)
    return bias, bias and not qwen2


def rmsnorm(b: OpBuilder, name: str, layer: int, rows: int, width: int) -> str:
    return b.vector(name, layer, "rmsnorm", "norm", rows * width, weight_params=width)


def swiglu(b: OpBuilder, prefix: str, layer: int, rows: int, hidden: int, inner: int, bias: bool,
           act_fn: str = "silu") -> str:
    """down(act_fn(gate(x)) x up(x)), in the order Hugging Face evaluates it."""
    x = b.current
    gate = b.gemm(f"{prefix}.gate_proj", layer, "ffn1", "ffn", rows, hidden, inner, bias=bias, reads=x)
    act = b.vector(f"{prefix}.{act_fn}", layer, act_fn, "ffn", rows * inner, reads=(gate,))
    up = b.gemm(f"{prefix}.up_proj", layer, "ffn1", "ffn", rows, hidden, inner, bias=bias, reads=x)
    b.vector(f"{prefix}.gate_mul", layer, "mul", "ffn", rows * inner, reads=(act, up))
    return b.gemm(f"{prefix}.down_proj", layer, "ffn2", "ffn", rows, inner, hidden, bias=bias)


class LlamaFamily(Family):
    model_types: tuple[str, ...] = ("llama", "qwen2", "mistral")
    tensor_parallel = True
    pipeline_parallel = True
    mixed_batches = True
    required: tuple[str, ...] = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                 "num_attention_heads", "max_position_embeddings")
    optional = OptionalKeys(sizes=("head_dim", "num_key_value_heads", "sliding_window"),
                            counts=("max_window_layers",), activations=("hidden_act",),
                            flags=("attention_bias", "mlp_bias", "tie_word_embeddings", "use_sliding_window"))
    heads = ("lm", "none")
    hf_classes = {"lm": "AutoModelForCausalLM", "none": "AutoModel"}
    phases = PHASES
    default_tokens = 512

    def blocks_alike(self, cfg: Mapping[str, Any]) -> bool:
        """Alike when every block keeps the same attention window."""
        return len(set(layer_windows(cfg))) == 1

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        head_dim(cfg), kv_heads(cfg), layer_windows(cfg)
        check_context(wl, cfg["max_position_embeddings"], "max_position_embeddings")
        tp = tensor_parallel(wl)
        tp.columns(cfg["num_attention_heads"], "num_attention_heads"), tp.kv_heads(kv_heads(cfg))
        tp.columns(cfg["intermediate_size"], "intermediate_size")
        return wl

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        # Prefill: all `tokens` at once. Decode: one new token attending to a cache of `tokens`.
        wl, rows, new = self._uniform(wl)
        head = head_rows(wl, rows, new) if wl.head == "lm" else None
        self._decoder(cfg, wl, b, rows, new, head, self._uniform_attend(cfg, wl, b))

    def build_mixed(self, cfg: Mapping[str, Any], batch: MixedBatch, b: OpBuilder, tp: int | None = None) -> None:
        """The iteration of a mixed batch (:mod:`workloads.mixed`): its token-wise ops over all new tokens,
        each kind of sequence's attention apart; the LM head on the emitting sequences' last tokens; one chip's
        of ``tp``."""
        wl, attend = self._mixed(cfg, batch, b, tp)
        # the rotary table: a row per new token (each sequence has its own positions)
        self._decoder(cfg, wl, b, batch.tokens, batch.tokens, batch.emitting, attend)

    def build_attention(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        """The first block's self-attention of :meth:`build`'s pass, alone (see :meth:`_attention_alone`)."""
        wl, rows, new = self._uniform(wl)
        self._attention_alone(cfg, b, rows, new, self._uniform_attend(cfg, wl, b))

    def build_mixed_attention(self, cfg: Mapping[str, Any], batch: MixedBatch, b: OpBuilder,
                              tp: int | None = None) -> None:
        """The first block's self-attention of :meth:`build_mixed`'s pass, alone (see :meth:`_attention_alone`)."""
        _, attend = self._mixed(cfg, batch, b, tp)
        self._attention_alone(cfg, b, batch.tokens, batch.tokens, attend)

    def build_head(self, cfg: Mapping[str, Any], tokens: int, emitting: int, b: OpBuilder,
                   tp: int | None = None) -> None:
        """The end of :meth:`build_mixed`'s pass alone: the last block's output made on the chip (one add, as
        the block's residual makes it), the final norm over ``tokens`` rows and the LM head on ``emitting``.
        Serving probes heads on it (:mod:`simulator.serving.iteration`); a head tied to the embedding is not
        built alone."""
        if setting(cfg, "tie_word_embeddings", False):
            raise InputError(f"{cfg['model_type']}: an LM head tied to the embedding is not probed alone")
        hidden = cfg["hidden_size"]
        x = b.input("hidden_states", tokens * hidden)
        b.current = x
        residual(b, "layers.0.mlp", 0, "ffn", tokens * hidden, x)
        rmsnorm(b, "norm", -1, tokens, hidden)
        _lm_head(b, cfg, tensor_parallel(Workload(tp=tp)), emitting, False)

    @staticmethod
    def _uniform(wl: Workload) -> tuple[Workload, int, int]:
        """This chip's workload (its sequences of an expert-parallel split), its rows and new tokens each."""
        wl = replace(wl, batch=ExpertParallel(wl.ep or 1).sequences(wl.batch))
        new = wl.size("tokens") if wl.phase == "prefill" else 1
        return wl, wl.batch * new, new

    def _uniform_attend(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> Attend:
        bias, out_bias = _biases(cfg)

        def attend(prefix: str, layer: int, window: int | None, table: str) -> None:
            attention(b, prefix, layer, self.attention_shape(cfg, wl, window, tensor_parallel(wl)), bias=bias,
                      out_bias=out_bias, score_adds=("causal_mask",), cache="step" if wl.phase == "decode" else "fill",
                      rope=table)

        return attend

    def _mixed(self, cfg: Mapping[str, Any], batch: MixedBatch, b: OpBuilder,
               tp: int | None) -> tuple[Workload, Attend]:
        """The workload of a mixed batch's pass and its attention (each kind of sequence apart)."""
        kinds = [kind for kind, _ in batch.key]
        counts = [count for _, count in batch.key]
        for kind in kinds:
            check_context(Workload(tokens=kind.cached + kind.new - 1, phase="decode"), cfg["max_position_embeddings"],
                          "max_position_embeddings")
        bias, out_bias = _biases(cfg)
        wl = Workload(batch=len(batch.sequences), expert_imbalance=batch.expert_imbalance, tp=tp)

        def attend(prefix: str, layer: int, window: int | None, table: str) -> None:
            shapes = tuple(self.mixed_shape(cfg, kind, count, window, tensor_parallel(wl))
                           for kind, count in zip(kinds, counts, strict=True))
            mixed_attention(b, prefix, layer, shapes, tuple(kind.cached == 0 for kind in kinds), bias=bias,
                            rope=table, out_bias=out_bias)

        return wl, attend

    @staticmethod
    def _attention_alone(cfg: Mapping[str, Any], b: OpBuilder, rows: int, positions: int, attend: Attend) -> None:
        """The first block's self-attention sublayer of a pass, alone: its input a hidden state normed on the
        chip and the rotary table made as the whole pass makes them, then ``attend``. Serving probes the
        attention of kinds of sequence on it (:mod:`simulator.serving.iteration`)."""
        x = b.input("hidden_states", rows * cfg["hidden_size"])
        table = b.vector("rotary_emb", -1, "rope_table", "embedding", 2 * positions * head_dim(cfg), reads=())
        b.current = x
        rmsnorm(b, "layers.0.input_layernorm", 0, rows, cfg["hidden_size"])
        attend("layers.0.self_attn", 0, layer_windows(cfg)[0], table)

    def _decoder(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder, rows: int, positions: int,
                 head: int | None, attend: Attend) -> None:
        """Embedding, the blocks (``attend`` builds each one's attention), the final norm and the LM head on
        ``head`` rows (None: no head; 0: an LM head stored but not run); split over ``wl.tp`` chips, the
        collectives of :mod:`workloads.parallel` after the vocabulary-parallel embedding and LM head and after
        each block's row-parallel products; of pipeline stage ``wl.stage``, its blocks only, the embedding on
        the first stage, the head on the last, the hidden states sent from one stage to the next."""
        hidden, tp = cfg["hidden_size"], tensor_parallel(wl)
        stage = PipelineStage(wl.pp or 1, wl.stage or 0)

        def reduce(name: str, layer: int, group: str) -> None:
            if tp.split:
                b.collective(f"{name}.all_reduce", layer, "all_reduce", group, rows * hidden, tp.degree)

        if stage.first:
            ids = b.input("input_ids", rows, bits=32)
            b.vector("embed_tokens", -1, "embedding", "embedding", rows * hidden,
                     weight_params=tp.vocabulary(cfg["vocab_size"]) * hidden, reads=(ids,))
            reduce("embed_tokens", -1, "embedding")
            x = b.current
        else:  # the previous stage's hidden states, received into this chip's DRAM
            x = b.input("hidden_states", rows * hidden)
        # cos and sin of every new position (position x inverse frequency), shared by the batch.
        table = b.vector("rotary_emb", -1, "rope_table", "embedding", 2 * positions * head_dim(cfg), reads=())
        windows, blocks = layer_windows(cfg), stage.layers(cfg["num_hidden_layers"])
        for i in blocks:
            p = f"layers.{i}"
            b.current = x
            rmsnorm(b, f"{p}.input_layernorm", i, rows, hidden)
            attend(f"{p}.self_attn", i, windows[i], table)
            reduce(f"{p}.self_attn", i, "attention")
            h = residual(b, f"{p}.self_attn", i, "attention", rows * hidden, x)
            rmsnorm(b, f"{p}.post_attention_layernorm", i, rows, hidden)
            self.feed_forward(b, cfg, wl, f"{p}.mlp", i, rows)
            reduce(f"{p}.mlp", i, "ffn")
            x = residual(b, f"{p}.mlp", i, "ffn", rows * hidden, h)
        if not stage.last:
            b.collective(f"layers.{blocks[-1]}.send", blocks[-1], "send", "ffn", rows * hidden, 2)
            return
        rmsnorm(b, "norm", -1, rows, hidden)
        if head is not None:  # a tied table read where the embedding lives, else the head's own copy
            _lm_head(b, cfg, tp, head, setting(cfg, "tie_word_embeddings", False) and stage.first)

    @staticmethod
    def mixed_shape(cfg: Mapping[str, Any], kind: Sequence, count: int, window: int | None,
                    tp: TensorParallel) -> AttentionShape:
        """``count`` sequences of ``kind``: their new tokens against the cached ones (at most W - 1 of them in
        a window) and themselves; the cache keeps all (W - 1 in a window) of them afterwards. One chip's heads
        of ``tp``."""
        total = kind.cached + kind.new
        keys = total if window is None else min(kind.cached, window - 1) + kind.new
        kept = None if window is None else min(total, window - 1)
        return _chip_shape(cfg, tp, count, kind.new, keys, kept, window)

    @staticmethod
    def attention_shape(cfg: Mapping[str, Any], wl: Workload, window: int | None,
                        tp: TensorParallel) -> AttentionShape:
        """A block's attention: a prefill's queries against themselves, or a decode step's one query against
        the cache and itself; a window keeps W - 1 cached tokens and attends to at most W keys. One chip's
        heads of ``tp``."""
        tokens, decode = wl.size("tokens"), wl.phase == "decode"
        new, context = (1, tokens + 1) if decode else (tokens, tokens)
        kept = None if window is None else min(tokens + decode, window - 1)
        if decode and window is not None:
            context = min(context, window)
        return _chip_shape(cfg, tp, wl.batch, new, context, kept, window)

    def feed_forward(self, b: OpBuilder, cfg: Mapping[str, Any], wl: Workload, prefix: str, layer: int,
                     rows: int) -> None:
        """The block's feed-forward sublayer on ``rows`` tokens (after its norm, before its residual)."""
        inner = tensor_parallel(wl).columns(cfg["intermediate_size"], "intermediate_size")
        swiglu(b, prefix, layer, rows, cfg["hidden_size"], inner, setting(cfg, "mlp_bias", False),
               activation(cfg, "hidden_act", "silu"))

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> HfInputs:
        return causal_lm_inputs(wl, torch)
