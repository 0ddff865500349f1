"""Wav2vec 2.0: convolutional feature encoder, convolutional positions, transformer encoder. The feature
encoder and the positions' convolution use the activation ``feat_extract_activation`` names, the encoder's
feed-forward the one ``hidden_act`` names (GELU by default, both)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from workloads.blocks import AttentionShape, attention, feed_forward, residual
from workloads.builder import OpBuilder
from workloads.errors import InputError
from workloads.families.base import (
    Family,
    HfInputs,
    Workload,
    heads_divide,
)
from workloads.families.config_keys import OptionalKeys, activation, setting


class Wav2Vec2Family(Family):
    model_types = ("wav2vec2",)
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "conv_dim", "conv_kernel", "conv_stride", "num_conv_pos_embeddings",
                "num_conv_pos_embedding_groups", "vocab_size")
    required_lists = ("conv_dim", "conv_kernel", "conv_stride")
    optional = OptionalKeys(flags=("conv_bias", "do_stable_layer_norm"),
                            probabilities=("mask_time_prob", "mask_feature_prob"),
                            activations=("feat_extract_activation", "hidden_act"))
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
        heads_divide(cfg, "hidden_size", "num_attention_heads")
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

    def feature_encoder(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> int:
        """The convolutional feature encoder over the raw audio; returns its output channels."""
        conv_bias = setting(cfg, "conv_bias", False)
        layer_norm = cfg.get("feat_extract_norm", "group") == "layer"
        act = activation(cfg, "feat_extract_activation", "gelu")
        channels_in, batch = 1, wl.batch
        b.input("input_values", batch * wl.size("audio_samples"))
        for i, length in enumerate(self.conv_lengths(cfg, wl.size("audio_samples"))):
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
        return channels_in

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        hidden, inner, heads = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
        batch, frames = wl.batch, wl.size("tokens")
        channels_in = self.feature_encoder(cfg, wl, b)
        rows = batch * frames
        b.layernorm("feature_projection.layernorm", -1, "frontend", rows, channels_in)
        projected = b.gemm("feature_projection", -1, "feature_proj", "frontend", rows, channels_in, hidden)
        if setting(cfg, "mask_time_prob", 0.05) > 0 or setting(cfg, "mask_feature_prob", 0.0) > 0:
            # A learned vector used only for training-time masking: stored, never computed with.
            b.vector("masked_spec_embed", -1, "mask_embed", "frontend", 0, weight_params=hidden, reads=())
            b.current = projected
        kernel, groups = cfg["num_conv_pos_embeddings"], cfg["num_conv_pos_embedding_groups"]
        if hidden % groups:
            raise InputError(f"num_conv_pos_embedding_groups={groups} does not divide hidden_size={hidden}")
        # Padding kernel//2 on both sides; an even kernel yields one extra position that is dropped.
        pos_len = frames + 2 * (kernel // 2) - kernel + 1
        b.gemm("encoder.pos_conv", -1, "pos_conv", "embedding", batch * pos_len, hidden // groups * kernel,
               hidden // groups, batch=groups, kind="conv")
        # weight_norm(dim=2) stores a direction tensor (counted above) and one gain per kernel tap.
        b.ops[-1] = replace(b.ops[-1], weight_params=b.ops[-1].weight_params + kernel)
        b.tensors["encoder.pos_conv.weight"] = replace(b.tensors["encoder.pos_conv.weight"],
                                                       elements=b.ops[-1].weight_params)
        pos_act = activation(cfg, "feat_extract_activation", "gelu")  # as Hugging Face's positional convolution
        b.vector(f"encoder.pos_conv.{pos_act}", -1, pos_act, "embedding", rows * hidden)
        x = b.add("encoder.add_position", -1, "embedding", rows * hidden, projected)
        stable = setting(cfg, "do_stable_layer_norm", False)
        if not stable:
            x = b.layernorm("encoder.layernorm", -1, "norm", rows, hidden)
        shape = AttentionShape(batch, frames, frames, hidden, heads, hidden // heads)
        hidden_act = activation(cfg, "hidden_act", "gelu")
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            if stable:
                b.layernorm(f"{p}.layernorm", i, "norm", rows, hidden)
            attention(b, f"{p}.attention", i, shape)
            h = residual(b, f"{p}.attention", i, "attention", rows * hidden, x)
            normed = b.layernorm(f"{p}.{'final_layernorm' if stable else 'layernorm'}", i, "norm", rows, hidden)
            feed_forward(b, f"{p}.ffn", i, rows, hidden, inner, hidden_act)
            # Pre-norm (stable) blocks add the un-normalised stream, post-norm ones the normalised one.
            x = residual(b, f"{p}.ffn", i, "ffn", rows * hidden, h if stable else normed)
            if not stable:
                x = b.layernorm(f"{p}.final_layernorm", i, "norm", rows, hidden)
        if stable:
            b.layernorm("encoder.layernorm", -1, "norm", rows, hidden)
        if wl.head == "ctc":
            b.gemm("lm_head", -1, "head", "head", rows, hidden, cfg["vocab_size"])

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> HfInputs:
        return {"input_values": torch.zeros(wl.batch, wl.size("audio_samples"), device="meta")}, None

