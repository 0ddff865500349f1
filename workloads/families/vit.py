"""Vision Transformer (``model_type`` vit). The feed-forward's activation is the one ``hidden_act`` names (GELU
by default); the classifier has a column per entry of ``id2label``, else ``num_labels`` (2 by default)."""

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


class ViTFamily(Family):
    model_types = ("vit",)
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "image_size", "patch_size")
    optional = OptionalKeys(sizes=("num_channels",), flags=("qkv_bias",), activations=("hidden_act",))
    heads = ("classifier", "pooler", "none")
    hf_classes = {"classifier": "ViTForImageClassification", "pooler": "ViTModel", "none": "ViTModel"}
    default_tokens = None
    knobs = ("image_size", "tokens")  # tokens follow from the image: accepted only if they agree

    def check(self, cfg: Mapping[str, Any], where: str) -> None:
        super().check(cfg, where)
        labels = cfg.get("id2label")
        if labels is not None and (not isinstance(labels, dict) or not labels):
            raise InputError(f"{where}: key 'id2label' must map each label's index to its name, got {labels!r}")

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        wl = super().resolve(cfg, wl)
        heads_divide(cfg, "hidden_size", "num_attention_heads")
        image = wl.image_size or cfg["image_size"]
        if image % cfg["patch_size"]:
            raise InputError(f"image size {image} is not divisible by the patch size {cfg['patch_size']}")
        tokens = (image // cfg["patch_size"]) ** 2 + 1
        if wl.tokens is not None and wl.tokens != tokens:  # a resolved workload re-resolves to itself
            raise InputError(f"--tokens does not apply to vit models: they take --image-size, and {image}-pixel "
                             f"images give (image/patch)^2 + 1 = {tokens} tokens")
        return replace(wl, image_size=image, tokens=tokens)

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        hidden, inner, heads = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
        patch, channels, batch, seq = cfg["patch_size"], _channels(cfg), wl.batch, wl.size("tokens")
        rows = batch * seq
        patches = seq - 1
        config_tokens = (cfg["image_size"] // patch) ** 2 + 1
        b.input("pixel_values", batch * channels * wl.size("image_size") ** 2)
        b.gemm("embeddings.patch", -1, "patch_embed", "embedding", batch * patches, channels * patch * patch,
               hidden, kind="conv")
        b.vector("embeddings.cls_token", -1, "concat", "embedding", batch * hidden, weight_params=hidden)
        b.vector("embeddings.add_position", -1, "add", "embedding", rows * hidden,
                 weight_params=config_tokens * hidden)
        shape = AttentionShape(batch, seq, seq, hidden, heads, hidden // heads)
        qkv_bias = setting(cfg, "qkv_bias", True)
        x = b.current
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            b.layernorm(f"{p}.layernorm_before", i, "norm", rows, hidden)
            attention(b, f"{p}.attention", i, shape, bias=qkv_bias)
            h = residual(b, f"{p}.attention", i, "attention", rows * hidden, x)
            b.layernorm(f"{p}.layernorm_after", i, "norm", rows, hidden)
            feed_forward(b, f"{p}.ffn", i, rows, hidden, inner, activation(cfg, "hidden_act", "gelu"))
            x = residual(b, f"{p}.ffn", i, "ffn", rows * hidden, h)
        b.layernorm("layernorm", -1, "norm", rows, hidden)
        if wl.head == "pooler":
            b.gemm("pooler.dense", -1, "pooler", "head", batch, hidden, hidden)
            b.vector("pooler.tanh", -1, "tanh", "head", batch * hidden)
        elif wl.head == "classifier":
            labels = cfg.get("id2label")
            b.gemm("classifier", -1, "head", "head", batch, hidden,
                   len(labels) if labels else setting(cfg, "num_labels", 2))

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> HfInputs:
        side = wl.size("image_size")
        pixels = torch.zeros(wl.batch, _channels(cfg), side, side, device="meta")
        inputs = {"pixel_values": pixels}
        if wl.size("image_size") != cfg["image_size"]:
            inputs["interpolate_pos_encoding"] = True
        return inputs, None


def _channels(cfg: Mapping[str, Any]) -> int:
    return setting(cfg, "num_channels", 3)
