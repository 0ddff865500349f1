"""Model specs (Hugging Face-style ``config.json``) and their closed-form op traces.

Supported ``model_type`` values: bert, roberta, vit, wav2vec2, gpt2, t5, fsmt. Every family builds
its ops in the order the Hugging Face eager implementation runs them (checked by the tracing tests).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from workloads.blocks import AttentionShape, attention, feed_forward, residual
from workloads.errors import InputError
from workloads.ops import MAX_SIZE, OpBuilder, Trace

PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class Workload:
    """Workload knobs. ``None`` means the family's default (see ``Family.resolve``)."""

    batch: int = 1
    tokens: int | None = None  # text tokens; for wav2vec2 the frame count
    image_size: int | None = None  # ViT, pixels per side
    audio_samples: int | None = None  # wav2vec2, 16 kHz samples
    head: str | None = None
    phase: str | None = None  # decoder-only models: prefill of `tokens` (default), or one decode step after them
    decoder_tokens: int | None = None  # encoder-decoder models; defaults to `tokens`

    def as_dict(self) -> dict[str, int | str]:
        return {k: v for k, v in asdict(self).items() if v is not None}


OPTIONAL_KNOBS = ("tokens", "image_size", "audio_samples", "decoder_tokens")


def _flag(name: str) -> str:
    """The command-line spelling of a Workload knob."""
    return "--" + name.replace("_", "-")


def _positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    if value is not None and value > MAX_SIZE:
        raise InputError(f"{name} = {value} exceeds the largest accepted size {MAX_SIZE} (31 bits)")


class Family:
    """How one ``model_type`` turns a config and a workload into ops."""

    model_types: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    heads: tuple[str, ...] = ("none",)  # the first is the default
    hf_classes: Mapping[str, str] = {}
    default_tokens: int | None = 384  # text families; None where tokens derive from other knobs
    knobs: tuple[str, ...] = ("tokens",)  # optional Workload knobs (besides batch and head) that apply
    phases: tuple[str, ...] = ()  # generation phases, the first the default; () = one forward pass only

    def check(self, cfg: Mapping[str, Any], where: str) -> None:
        missing = [k for k in self.required if k not in cfg]
        if missing:
            raise InputError(f"{where}: missing key(s) {', '.join(missing)} for model_type {cfg['model_type']!r}")
        for key in self.required:
            value = cfg[key]
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, bool) or not isinstance(item, (int, str)):
                    raise InputError(f"{where}: key {key!r} has an invalid value {value!r}")
                if isinstance(item, int) and item <= 0:
                    raise InputError(f"{where}: key {key!r} must be positive, got {value!r}")

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        """Fill defaults and validate the workload against the config; refuse knobs that do not apply."""
        for name in ("batch", *OPTIONAL_KNOBS):
            _positive(_flag(name), getattr(wl, name))
        model_type = cfg["model_type"]
        takes = ", ".join(_flag(name) for name in ("batch", "head", *self.knobs, *(["phase"] if self.phases else [])))
        for name in OPTIONAL_KNOBS:
            if getattr(wl, name) is not None and name not in self.knobs:
                raise InputError(f"{_flag(name)} does not apply to {model_type} models (they take {takes})")
        head = wl.head or self.heads[0]
        if head not in self.heads:
            raise InputError(f"head {head!r} is not available for {model_type}; "
                             f"choose from {', '.join(self.heads)}")
        if wl.phase is not None and wl.phase not in PHASES:
            raise InputError(f"phase {wl.phase!r} is unknown; choose from {', '.join(PHASES)}")
        if wl.phase is not None and wl.phase not in self.phases:
            raise InputError(f"--phase {wl.phase} does not apply to {model_type} models: they run one forward "
                             f"pass, without generation phases (they take {takes})")
        phase = wl.phase or (self.phases[0] if self.phases else None)
        tokens = wl.tokens if wl.tokens is not None or self.default_tokens is None else self.default_tokens
        return replace(wl, head=head, tokens=tokens, phase=phase)

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        raise NotImplementedError

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> tuple[dict, Callable | None]:
        ids = torch.zeros(wl.batch, wl.tokens, dtype=torch.long, device="meta")
        return {"input_ids": ids}, None

    def hf_non_trace_params(self, cfg: Mapping[str, Any]) -> int:
        """Parameters Hugging Face counts that are not learned (fixed tables computed at load time)."""
        return 0


def _heads_divide(cfg: Mapping[str, Any], hidden_key: str, heads_key: str) -> int:
    hidden, heads = cfg[hidden_key], cfg[heads_key]
    if hidden % heads:
        raise InputError(f"{heads_key}={heads} does not divide {hidden_key}={hidden}")
    return hidden // heads


class BertFamily(Family):
    model_types = ("bert", "roberta")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "type_vocab_size")
    heads = ("qa", "pooler", "none")

    @staticmethod
    def _position_limit(cfg: Mapping[str, Any]) -> int:
        # RoBERTa numbers positions from padding_idx + 1.
        if cfg["model_type"] == "roberta":
            return cfg["max_position_embeddings"] - cfg.get("pad_token_id", 1) - 1
        return cfg["max_position_embeddings"]

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        _heads_divide(cfg, "hidden_size", "num_attention_heads")
        if wl.tokens > self._position_limit(cfg):
            raise InputError(f"tokens={wl.tokens} exceeds the model's {self._position_limit(cfg)} positions")
        return wl

    def hf_class(self, cfg: Mapping[str, Any], head: str) -> str:
        prefix = "Bert" if cfg["model_type"] == "bert" else "Roberta"
        return f"{prefix}ForQuestionAnswering" if head == "qa" else f"{prefix}Model"

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        hidden, inner = cfg["hidden_size"], cfg["intermediate_size"]
        heads, seq, batch = cfg["num_attention_heads"], wl.tokens, wl.batch
        rows = batch * seq
        act = cfg.get("hidden_act", "gelu")
        b.vector("embeddings.word", -1, "embedding", "embedding", rows * hidden,
                 weight_params=cfg["vocab_size"] * hidden)
        b.vector("embeddings.token_type", -1, "embedding", "embedding", rows * hidden,
                 weight_params=cfg["type_vocab_size"] * hidden)
        b.vector("embeddings.add_token_type", -1, "add", "embedding", rows * hidden)
        # BERT looks positions up once per sequence position (broadcast over the batch); RoBERTa derives
        # them from each sequence's token ids.
        position_rows = rows if cfg["model_type"] == "roberta" else seq
        b.vector("embeddings.position", -1, "embedding", "embedding", position_rows * hidden,
                 weight_params=cfg["max_position_embeddings"] * hidden)
        b.vector("embeddings.add_position", -1, "add", "embedding", rows * hidden)
        b.layernorm("embeddings.layernorm", -1, "norm", rows, hidden)
        shape = AttentionShape(batch, seq, seq, hidden, heads, hidden // heads)
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            attention(b, f"{p}.attention", i, shape)
            residual(b, f"{p}.attention", i, "attention", rows * hidden)
            b.layernorm(f"{p}.attention.layernorm", i, "norm", rows, hidden)
            feed_forward(b, f"{p}.ffn", i, rows, hidden, inner, act)
            residual(b, f"{p}.ffn", i, "ffn", rows * hidden)
            b.layernorm(f"{p}.ffn.layernorm", i, "norm", rows, hidden)
        if wl.head == "pooler":
            b.gemm("pooler.dense", -1, "pooler", "head", batch, hidden, hidden)
            b.vector("pooler.tanh", -1, "tanh", "head", batch * hidden)
        elif wl.head == "qa":
            b.gemm("qa_outputs", -1, "head", "head", rows, hidden, 2)


class ViTFamily(Family):
    model_types = ("vit",)
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "image_size", "patch_size")
    heads = ("classifier", "pooler", "none")
    hf_classes = {"classifier": "ViTForImageClassification", "pooler": "ViTModel", "none": "ViTModel"}
    default_tokens = None
    knobs = ("image_size", "tokens")  # tokens follow from the image: accepted only if they agree

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        _heads_divide(cfg, "hidden_size", "num_attention_heads")
        image = wl.image_size or cfg["image_size"]
        if image % cfg["patch_size"]:
            raise InputError(f"image size {image} is not divisible by the patch size {cfg['patch_size']}")
        tokens = (image // cfg["patch_size"]) ** 2 + 1
        if wl.tokens is not None and wl.tokens != tokens:  # a resolved workload re-resolves to itself
            raise InputError(f"--tokens does not apply to vit models: they take --image-size, and {image}-pixel "
                             f"images give (image/patch)^2 + 1 = {tokens} tokens")
        return replace(wl, image_size=image, tokens=tokens)

    def hf_class(self, cfg: Mapping[str, Any], head: str) -> str:
        return self.hf_classes[head]

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        hidden, inner, heads = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
        patch, channels, batch, seq = cfg["patch_size"], cfg.get("num_channels", 3), wl.batch, wl.tokens
        rows = batch * seq
        patches = seq - 1
        config_tokens = (cfg["image_size"] // patch) ** 2 + 1
        b.gemm("embeddings.patch", -1, "patch_embed", "embedding", batch * patches, channels * patch * patch,
               hidden, kind="conv")
        b.vector("embeddings.cls_token", -1, "concat", "embedding", batch * hidden, weight_params=hidden)
        b.vector("embeddings.add_position", -1, "add", "embedding", rows * hidden,
                 weight_params=config_tokens * hidden)
        shape = AttentionShape(batch, seq, seq, hidden, heads, hidden // heads)
        qkv_bias = cfg.get("qkv_bias", True)
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            b.layernorm(f"{p}.layernorm_before", i, "norm", rows, hidden)
            attention(b, f"{p}.attention", i, shape, bias=qkv_bias)
            residual(b, f"{p}.attention", i, "attention", rows * hidden)
            b.layernorm(f"{p}.layernorm_after", i, "norm", rows, hidden)
            feed_forward(b, f"{p}.ffn", i, rows, hidden, inner, cfg.get("hidden_act", "gelu"))
            residual(b, f"{p}.ffn", i, "ffn", rows * hidden)
        b.layernorm("layernorm", -1, "norm", rows, hidden)
        if wl.head == "pooler":
            b.gemm("pooler.dense", -1, "pooler", "head", batch, hidden, hidden)
            b.vector("pooler.tanh", -1, "tanh", "head", batch * hidden)
        elif wl.head == "classifier":
            b.gemm("classifier", -1, "head", "head", batch, hidden, _num_labels(cfg))

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> tuple[dict, Callable | None]:
        pixels = torch.zeros(wl.batch, cfg.get("num_channels", 3), wl.image_size, wl.image_size, device="meta")
        inputs = {"pixel_values": pixels}
        if wl.image_size != cfg["image_size"]:
            inputs["interpolate_pos_encoding"] = True
        return inputs, None


def _num_labels(cfg: Mapping[str, Any]) -> int:
    if "id2label" in cfg:
        return len(cfg["id2label"])
    return int(cfg.get("num_labels", 2))


class Wav2Vec2Family(Family):
    model_types = ("wav2vec2",)
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "conv_dim", "conv_kernel", "conv_stride", "num_conv_pos_embeddings",
                "num_conv_pos_embedding_groups", "vocab_size")
    heads = ("ctc", "none")
    hf_classes = {"ctc": "Wav2Vec2ForCTC", "none": "Wav2Vec2Model"}
    default_tokens = None
    knobs = ("tokens", "audio_samples")  # tokens = frames
    # 14 s of 16 kHz audio: 699 frames, inside the paper's 600-800 frames per utterance (mean ~700).
    default_audio_samples = 224_000

    def check(self, cfg: Mapping[str, Any], where: str) -> None:
        super().check(cfg, where)
        if not len(cfg["conv_dim"]) == len(cfg["conv_kernel"]) == len(cfg["conv_stride"]):
            raise InputError(f"{where}: conv_dim, conv_kernel and conv_stride must have the same length")
        if cfg.get("feat_extract_norm", "group") not in ("group", "layer"):
            raise InputError(f"{where}: feat_extract_norm must be 'group' or 'layer'")

    @staticmethod
    def conv_lengths(cfg: Mapping[str, Any], samples: int) -> list[int]:
        """Output length of every feature-encoder convolution (no padding)."""
        lengths, length = [], samples
        for k, s in zip(cfg["conv_kernel"], cfg["conv_stride"], strict=True):
            length = (length - k) // s + 1
            lengths.append(length)
        return lengths

    @staticmethod
    def receptive_field(cfg: Mapping[str, Any]) -> tuple[int, int]:
        """(samples needed for one frame, samples between frames): 400 and 320 for wav2vec 2.0."""
        field, stride = 1, 1
        for k, s in zip(cfg["conv_kernel"], cfg["conv_stride"], strict=True):
            field += (k - 1) * stride
            stride *= s
        return field, stride

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        _heads_divide(cfg, "hidden_size", "num_attention_heads")
        field, stride = self.receptive_field(cfg)
        if wl.audio_samples is not None and wl.tokens is not None:
            if wl.audio_samples < field or self.conv_lengths(cfg, wl.audio_samples)[-1] != wl.tokens:
                raise InputError("give either --audio-samples or --tokens (frames) for wav2vec2, not both")
            samples = wl.audio_samples
        elif wl.tokens is not None:  # the shortest audio that yields this many frames
            samples = field + (wl.tokens - 1) * stride
        else:
            samples = wl.audio_samples or self.default_audio_samples
        if samples < field:
            raise InputError(f"audio of {samples} samples is shorter than one frame ({field} samples)")
        return replace(wl, audio_samples=samples, tokens=self.conv_lengths(cfg, samples)[-1])

    def hf_class(self, cfg: Mapping[str, Any], head: str) -> str:
        return self.hf_classes[head]

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        hidden, inner, heads = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
        batch, frames = wl.batch, wl.tokens
        conv_bias = cfg.get("conv_bias", False)
        layer_norm = cfg.get("feat_extract_norm", "group") == "layer"
        act = cfg.get("feat_extract_activation", "gelu")
        channels_in = 1
        for i, length in enumerate(self.conv_lengths(cfg, wl.audio_samples)):
            out = cfg["conv_dim"][i]
            p = f"feature_encoder.conv.{i}"
            b.gemm(p, -1, "conv", "frontend", batch * length, channels_in * cfg["conv_kernel"][i], out,
                   bias=conv_bias, kind="conv")
            if layer_norm:
                b.layernorm(f"{p}.layernorm", -1, "frontend", batch * length, out)
            elif i == 0:
                b.vector(f"{p}.groupnorm", -1, "groupnorm", "frontend", batch * length * out,
                         weight_params=out, bias_params=out)
            b.vector(f"{p}.{act}", -1, act, "frontend", batch * length * out)
            channels_in = out
        rows = batch * frames
        b.layernorm("feature_projection.layernorm", -1, "frontend", rows, channels_in)
        b.gemm("feature_projection", -1, "feature_proj", "frontend", rows, channels_in, hidden)
        if cfg.get("mask_time_prob", 0.05) > 0 or cfg.get("mask_feature_prob", 0.0) > 0:
            # A learned vector used only for training-time masking: stored, never computed with.
            b.vector("masked_spec_embed", -1, "mask_embed", "frontend", 0, weight_params=hidden)
        kernel, groups = cfg["num_conv_pos_embeddings"], cfg["num_conv_pos_embedding_groups"]
        if hidden % groups:
            raise InputError(f"num_conv_pos_embedding_groups={groups} does not divide hidden_size={hidden}")
        # Padding kernel//2 on both sides; an even kernel yields one extra position that is dropped.
        pos_len = frames + 2 * (kernel // 2) - kernel + 1
        b.gemm("encoder.pos_conv", -1, "pos_conv", "embedding", batch * pos_len, hidden // groups * kernel,
               hidden // groups, batch=groups, kind="conv")
        # weight_norm(dim=2) stores a direction tensor (counted above) and one gain per kernel tap.
        b.ops[-1] = replace(b.ops[-1], weight_params=b.ops[-1].weight_params + kernel)
        b.vector("encoder.pos_conv.gelu", -1, "gelu", "embedding", rows * hidden)
        b.vector("encoder.add_position", -1, "add", "embedding", rows * hidden)
        stable = cfg.get("do_stable_layer_norm", False)
        if not stable:
            b.layernorm("encoder.layernorm", -1, "norm", rows, hidden)
        shape = AttentionShape(batch, frames, frames, hidden, heads, hidden // heads)
        hidden_act = cfg.get("hidden_act", "gelu")
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            if stable:
                b.layernorm(f"{p}.layernorm", i, "norm", rows, hidden)
            attention(b, f"{p}.attention", i, shape)
            residual(b, f"{p}.attention", i, "attention", rows * hidden)
            b.layernorm(f"{p}.{'final_layernorm' if stable else 'layernorm'}", i, "norm", rows, hidden)
            feed_forward(b, f"{p}.ffn", i, rows, hidden, inner, hidden_act)
            residual(b, f"{p}.ffn", i, "ffn", rows * hidden)
            if not stable:
                b.layernorm(f"{p}.final_layernorm", i, "norm", rows, hidden)
        if stable:
            b.layernorm("encoder.layernorm", -1, "norm", rows, hidden)
        if wl.head == "ctc":
            b.gemm("lm_head", -1, "head", "head", rows, hidden, cfg["vocab_size"])

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> tuple[dict, Callable | None]:
        return {"input_values": torch.zeros(wl.batch, wl.audio_samples, device="meta")}, None


class GPT2Family(Family):
    model_types = ("gpt2",)
    required = ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions")
    heads = ("lm", "none")
    hf_classes = {"lm": "GPT2LMHeadModel", "none": "GPT2Model"}
    phases = PHASES

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        _heads_divide(cfg, "n_embd", "n_head")
        context = wl.tokens + (1 if wl.phase == "decode" else 0)
        if context > cfg["n_positions"]:
            raise InputError(f"a context of {context} tokens exceeds the model's {cfg['n_positions']} positions")
        return wl

    def hf_class(self, cfg: Mapping[str, Any], head: str) -> str:
        return self.hf_classes[head]

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        hidden, heads, batch = cfg["n_embd"], cfg["n_head"], wl.batch
        inner = cfg.get("n_inner") or 4 * hidden
        # Prefill: all `tokens` at once. Decode: one new token attending to a cache of `tokens`.
        new, context = (wl.tokens, wl.tokens) if wl.phase == "prefill" else (1, wl.tokens + 1)
        rows = batch * new
        b.vector("wte", -1, "embedding", "embedding", rows * hidden, weight_params=cfg["vocab_size"] * hidden)
        # Position ids are shared by the batch: one lookup per new position.
        b.vector("wpe", -1, "embedding", "embedding", new * hidden, weight_params=cfg["n_positions"] * hidden)
        b.vector("embeddings.add_position", -1, "add", "embedding", rows * hidden)
        shape = AttentionShape(batch, new, context, hidden, heads, hidden // heads)
        act = "gelu" if cfg.get("activation_function", "gelu_new").startswith("gelu") else "relu"
        for i in range(cfg["n_layer"]):
            p = f"h.{i}"
            b.layernorm(f"{p}.ln_1", i, "norm", rows, hidden)
            # The causal mask is added to the scores (a decode step's single query sees the whole cache).
            attention(b, f"{p}.attn", i, shape, fused_qkv=True, score_adds=("causal_mask",))
            residual(b, f"{p}.attn", i, "attention", rows * hidden)
            b.layernorm(f"{p}.ln_2", i, "norm", rows, hidden)
            feed_forward(b, f"{p}.mlp", i, rows, hidden, inner, act)
            residual(b, f"{p}.mlp", i, "ffn", rows * hidden)
        b.layernorm("ln_f", -1, "norm", rows, hidden)
        if wl.head == "lm":
            # Tied to wte: no parameters of its own.
            b.gemm("lm_head", -1, "head", "head", rows, hidden, cfg["vocab_size"], bias=False, owns_weight=False)

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> tuple[dict, Callable | None]:
        prompt = torch.zeros(wl.batch, wl.tokens, dtype=torch.long, device="meta")
        if wl.phase == "prefill":
            return {"input_ids": prompt}, None

        def prefill(model: Any, _inputs: dict) -> dict:
            cache = model(input_ids=prompt, use_cache=True).past_key_values
            step = torch.zeros(wl.batch, 1, dtype=torch.long, device="meta")
            return {"input_ids": step, "past_key_values": cache, "use_cache": True}

        return {}, prefill


def _encoder_decoder_inputs(wl: Workload, torch: Any) -> dict:
    def ids(length: int) -> Any:
        return torch.zeros(wl.batch, length, dtype=torch.long, device="meta")

    return {"input_ids": ids(wl.tokens), "decoder_input_ids": ids(wl.decoder_tokens)}


class T5Family(Family):
    model_types = ("t5",)
    required = ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers",
                "relative_attention_num_buckets")
    heads = ("lm", "none")
    hf_classes = {"lm": "T5ForConditionalGeneration", "none": "T5Model"}
    knobs = ("tokens", "decoder_tokens")

    def check(self, cfg: Mapping[str, Any], where: str) -> None:
        super().check(cfg, where)
        if cfg.get("feed_forward_proj", "relu") not in ("relu", "gelu"):
            raise InputError(f"{where}: feed_forward_proj {cfg['feed_forward_proj']!r} is not supported "
                             "(supported: relu, gelu)")

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        return replace(wl, decoder_tokens=wl.decoder_tokens or wl.tokens)

    def hf_class(self, cfg: Mapping[str, Any], head: str) -> str:
        return self.hf_classes[head]

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        d_model, d_ff, heads, d_kv = cfg["d_model"], cfg["d_ff"], cfg["num_heads"], cfg["d_kv"]
        buckets, vocab, batch = cfg["relative_attention_num_buckets"], cfg["vocab_size"], wl.batch
        act = cfg.get("feed_forward_proj", "relu")
        src, tgt = wl.tokens, wl.decoder_tokens
        enc_layers = cfg["num_layers"]
        dec_layers = cfg.get("num_decoder_layers") or enc_layers
        tied = cfg.get("tie_word_embeddings", True)

        def stack(name: str, first: int, layers: int, seq: int, cross: bool) -> None:
            rows = batch * seq
            b.vector(f"{name}.embed_tokens", -1, "embedding", "embedding", rows * d_model,
                     weight_params=0 if cross else vocab * d_model)  # one table shared by both stacks
            self_shape = AttentionShape(batch, seq, seq, d_model, heads, d_kv)
            cross_shape = AttentionShape(batch, seq, src, d_model, heads, d_kv)
            for j in range(layers):
                i, p = first + j, f"{name}.block.{j}"
                b.layernorm(f"{p}.self_attention.layernorm", i, "norm", rows, d_model, bias=False)
                # Relative position bias: looked up in the first block of a stack, added in every block.
                lookup = (lambda p=p, i=i, seq=seq: b.vector(
                    f"{p}.relative_attention_bias", i, "embedding", "attention", seq * seq * heads,
                    weight_params=buckets * heads)) if j == 0 else None
                # The decoder adds its causal mask to the scores as a second term.
                adds = ("position_bias", "causal_mask") if cross else ("position_bias",)
                attention(b, f"{p}.self_attention", i, self_shape, bias=False, scale=None, score_adds=adds,
                          after_projections=lookup)
                residual(b, f"{p}.self_attention", i, "attention", rows * d_model)
                if cross:
                    b.layernorm(f"{p}.cross_attention.layernorm", i, "norm", rows, d_model, bias=False)
                    # Cross-attention has no relative bias of its own; HF adds a zero bias all the same.
                    attention(b, f"{p}.cross_attention", i, cross_shape, bias=False, scale=None,
                              score_adds=("position_bias",))
                    residual(b, f"{p}.cross_attention", i, "attention", rows * d_model)
                b.layernorm(f"{p}.ffn.layernorm", i, "norm", rows, d_model, bias=False)
                feed_forward(b, f"{p}.ffn", i, rows, d_model, d_ff, act, bias=False)
                residual(b, f"{p}.ffn", i, "ffn", rows * d_model)
            b.layernorm(f"{name}.final_layernorm", -1, "norm", rows, d_model, bias=False)

        stack("encoder", 0, enc_layers, src, cross=False)
        stack("decoder", enc_layers, dec_layers, tgt, cross=True)
        if wl.head == "lm":
            rows = batch * tgt
            if tied:
                b.vector("lm_head.scale", -1, "mul", "head", rows * d_model)
            b.gemm("lm_head", -1, "head", "head", rows, d_model, vocab, bias=False, owns_weight=not tied)

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> tuple[dict, Callable | None]:
        return _encoder_decoder_inputs(wl, torch), None


class FSMTFamily(Family):
    model_types = ("fsmt",)
    required = ("src_vocab_size", "tgt_vocab_size", "d_model", "encoder_layers", "decoder_layers",
                "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim")
    heads = ("lm",)  # HF's FSMT decoder always ends in its output projection
    hf_classes = {"lm": "FSMTForConditionalGeneration"}
    knobs = ("tokens", "decoder_tokens")

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        wl = replace(wl, decoder_tokens=wl.decoder_tokens or wl.tokens)
        _heads_divide(cfg, "d_model", "encoder_attention_heads")
        _heads_divide(cfg, "d_model", "decoder_attention_heads")
        limit = cfg.get("max_position_embeddings", 1024)
        if max(wl.tokens, wl.decoder_tokens) > limit:
            raise InputError(f"sequence length exceeds the model's {limit} positions")
        return wl

    def hf_class(self, cfg: Mapping[str, Any], head: str) -> str:
        return self.hf_classes[head]

    def hf_non_trace_params(self, cfg: Mapping[str, Any]) -> int:
        # HF stores the fixed sinusoidal tables (max_position_embeddings + padding_idx + 1 rows) as
        # parameters of both stacks; they are computed, not learned, so traces do not count them.
        rows = cfg.get("max_position_embeddings", 1024) + cfg.get("pad_token_id", 1) + 1
        return 2 * rows * cfg["d_model"]

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        d_model, batch = cfg["d_model"], wl.batch
        src, tgt = wl.tokens, wl.decoder_tokens
        scale = cfg.get("scale_embedding", True)
        act = cfg.get("activation_function", "relu")
        enc_rows, dec_rows = batch * src, batch * tgt

        # With tie_word_embeddings, HF ties the encoder's and the decoder's token embeddings and the output
        # projection into one table (Vaswani et al.'s shared source/target vocabulary): counted here once.
        tied = cfg.get("tie_word_embeddings", False)
        if tied and cfg["src_vocab_size"] != cfg["tgt_vocab_size"]:
            raise InputError("tie_word_embeddings needs src_vocab_size == tgt_vocab_size")
        b.vector("encoder.embed_tokens", -1, "embedding", "embedding", enc_rows * d_model,
                 weight_params=cfg["src_vocab_size"] * d_model)
        if scale:
            b.vector("encoder.embed_scale", -1, "mul", "embedding", enc_rows * d_model)
        b.vector("encoder.embed_positions", -1, "embedding", "embedding", enc_rows * d_model)
        b.vector("encoder.add_position", -1, "add", "embedding", enc_rows * d_model)
        heads = cfg["encoder_attention_heads"]
        shape = AttentionShape(batch, src, src, d_model, heads, d_model // heads)
        for i in range(cfg["encoder_layers"]):
            p = f"encoder.layers.{i}"
            attention(b, f"{p}.self_attn", i, shape, scale="query", kv_first=True)
            residual(b, f"{p}.self_attn", i, "attention", enc_rows * d_model)
            b.layernorm(f"{p}.self_attn_layer_norm", i, "norm", enc_rows, d_model)
            feed_forward(b, f"{p}.ffn", i, enc_rows, d_model, cfg["encoder_ffn_dim"], act)
            residual(b, f"{p}.ffn", i, "ffn", enc_rows * d_model)
            b.layernorm(f"{p}.final_layer_norm", i, "norm", enc_rows, d_model)

        b.vector("decoder.embed_positions", -1, "embedding", "embedding", dec_rows * d_model)
        b.vector("decoder.embed_tokens", -1, "embedding", "embedding", dec_rows * d_model,
                 weight_params=0 if tied else cfg["tgt_vocab_size"] * d_model)
        if scale:
            b.vector("decoder.embed_scale", -1, "mul", "embedding", dec_rows * d_model)
        b.vector("decoder.add_position", -1, "add", "embedding", dec_rows * d_model)
        heads = cfg["decoder_attention_heads"]
        self_shape = AttentionShape(batch, tgt, tgt, d_model, heads, d_model // heads)
        cross_shape = AttentionShape(batch, tgt, src, d_model, heads, d_model // heads)
        first = cfg["encoder_layers"]
        for j in range(cfg["decoder_layers"]):
            i, p = first + j, f"decoder.layers.{j}"
            # HF applies FSMT's causal mask with a masked fill, not an add.
            attention(b, f"{p}.self_attn", i, self_shape, scale="query", kv_first=True)
            residual(b, f"{p}.self_attn", i, "attention", dec_rows * d_model)
            b.layernorm(f"{p}.self_attn_layer_norm", i, "norm", dec_rows, d_model)
            attention(b, f"{p}.encoder_attn", i, cross_shape, scale="query", kv_first=True)
            residual(b, f"{p}.encoder_attn", i, "attention", dec_rows * d_model)
            b.layernorm(f"{p}.encoder_attn_layer_norm", i, "norm", dec_rows, d_model)
            feed_forward(b, f"{p}.ffn", i, dec_rows, d_model, cfg["decoder_ffn_dim"], act)
            residual(b, f"{p}.ffn", i, "ffn", dec_rows * d_model)
            b.layernorm(f"{p}.final_layer_norm", i, "norm", dec_rows, d_model)
        if wl.head == "lm":
            b.gemm("output_projection", -1, "head", "head", dec_rows, d_model, cfg["tgt_vocab_size"],
                   bias=False, owns_weight=not tied)

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> tuple[dict, Callable | None]:
        return _encoder_decoder_inputs(wl, torch), None


class TracedOnlyFamily(Family):
    """A ``model_type`` accelsim has no closed form for: it can only be traced (``--trace``), as a text
    model fed ``tokens`` token ids, through transformers' Auto classes."""

    heads = ("none", "lm")
    hf_classes = {"none": "AutoModel", "lm": "AutoModelForCausalLM"}

    def hf_class(self, cfg: Mapping[str, Any], head: str) -> str:
        return self.hf_classes[head]

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        raise InputError(f"unsupported model_type {cfg['model_type']!r} for the closed form (supported: "
                         f"{', '.join(sorted(FAMILIES))}); add --trace to simulate the real transformers model "
                         "(hf extra)")

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> tuple[dict, Callable | None]:
        return {"input_ids": torch.zeros(wl.batch, wl.tokens, dtype=torch.long, device="meta")}, None


TRACED_ONLY = TracedOnlyFamily()
FAMILIES: dict[str, Family] = {}
for _family in (BertFamily(), ViTFamily(), Wav2Vec2Family(), GPT2Family(), T5Family(), FSMTFamily()):
    for _model_type in _family.model_types:
        FAMILIES[_model_type] = _family


@dataclass(frozen=True)
class ModelSpec:
    """A model config (Hugging Face ``config.json`` contents) and the family that interprets it."""

    name: str
    config: Mapping[str, Any]

    @property
    def family(self) -> Family:
        return FAMILIES.get(self.config["model_type"], TRACED_ONLY)

    @property
    def has_closed_form(self) -> bool:
        return self.config["model_type"] in FAMILIES

    def resolve(self, workload: Workload) -> Workload:
        return self.family.resolve(self.config, workload)

    def trace(self, workload: Workload | None = None) -> Trace:
        """The closed-form op trace of one forward pass."""
        wl = self.resolve(workload or Workload())
        b = OpBuilder()
        self.family.build(self.config, wl, b)
        return Trace(self.name, tuple(b.ops), wl.as_dict())

    def hf_class(self, head: str) -> str:
        return self.family.hf_class(self.config, head)

    def hf_inputs(self, workload: Workload, torch: Any) -> tuple[dict, Callable | None]:
        return self.family.hf_inputs(self.config, workload, torch)


def zoo_names() -> list[str]:
    folder = resources.files("workloads") / "zoo"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def parse_config(text: str, where: str) -> dict[str, Any]:
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{where}: expected a JSON object")
    if "model_type" not in cfg:
        raise InputError(f"{where}: missing key model_type")
    if not isinstance(cfg["model_type"], str):
        raise InputError(f"{where}: model_type must be a string")
    FAMILIES.get(cfg["model_type"], TRACED_ONLY).check(cfg, where)  # an unknown type can still be traced
    return cfg


def load_model(name_or_path: str) -> ModelSpec:
    """A zoo name (e.g. ``bert-base``) or a path to a ``config.json`` of a supported model type."""
    names = zoo_names()
    if name_or_path in names:
        text = (resources.files("workloads") / "zoo" / f"{name_or_path}.json").read_text()
        return ModelSpec(name_or_path, parse_config(text, name_or_path))
    path = Path(name_or_path)
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.is_file():
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read ({exc.__class__.__name__})") from None
        return ModelSpec(path.stem if path.name != "config.json" else path.parent.name or "model",
                         parse_config(text, str(path)))
    if path.is_dir():
        raise InputError(f"{path}: is a directory without a config.json")
    if path.exists():
        raise InputError(f"{path}: not a config.json file")
    close = difflib.get_close_matches(name_or_path, names, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(names)}"
    raise InputError(f"unknown model {name_or_path!r} (not a zoo name or an existing config.json){hint}")
