"""Names, block indices, roles and groups of traced ops, from the Hugging Face module paths (pure).

A traced op is named after the module that ran it (``bert.encoder.layer.3.attention.self.query``);
attention BMMs after their attention module plus ``.bmm_qk`` / ``.bmm_av``; element-wise ops after
their module plus the role (``...output.add``). The rules below cover the naming conventions of the
zoo families and of Llama-style models (q_proj ... down_proj); a projection they do not recognise is
an ``other`` GEMM (role ``feature_proj``), never silently a prunable linear layer.
"""

from __future__ import annotations

import re

_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")

_LEAF_ROLES = {
    "q": ("query", "q_proj", "q"),
    "k": ("key", "k_proj", "k"),
    "v": ("value", "v_proj", "v"),
    "qkv": ("c_attn", "qkv", "qkv_proj", "query_key_value", "Wqkv"),
    "attn_out": ("o_proj", "out_proj", "o"),
    "ffn1": ("intermediate_dense", "c_fc", "fc1", "wi", "wi_0", "wi_1", "up_proj", "gate_proj", "dense_h_to_4h"),
    "ffn2": ("output_dense", "fc2", "wo", "down_proj", "dense_4h_to_h"),
    "head": ("lm_head", "classifier", "qa_outputs", "output_projection", "score"),
}
_ROLE_OF_LEAF = {leaf: role for role, leaves in _LEAF_ROLES.items() for leaf in leaves}
_ATTENTION_WORDS = ("attention", "attn", "selfattention", "encdecattention")
_FFN_WORDS = ("mlp", "intermediate", "feed_forward", "densereludense", "ffn")
_FRONTEND_WORDS = ("feature_extractor", "feature_projection")
_HEAD_WORDS = ("lm_head", "classifier", "qa_outputs", "output_projection", "pooler", "score")


def block_index(path: str, encoder_blocks: int) -> int:
    """The block a module belongs to (decoder blocks numbered after the encoder's), or -1."""
    match = _BLOCK.search(path)
    if match is None:
        return -1
    index = int(match.group(1))
    return index + encoder_blocks if "decoder" in path.split(".") else index


def _words(path: str) -> list[str]:
    return [part.lower() for part in path.split(".")]


def _inside(path: str, words: tuple[str, ...]) -> bool:
    return any(word in part for part in _words(path) for word in words)


def matrix_role(path: str, kind: str) -> str:
    """The role of a GEMM or convolution that ran inside the module at ``path``."""
    parts = path.split(".")
    leaf, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
    if kind == "conv":
        if "patch" in path:
            return "patch_embed"
        return "pos_conv" if "pos_conv" in path else "conv"
    if "pooler" in parts:
        return "pooler"
    if "feature_projection" in path:
        return "feature_proj"
    if leaf in ("gate", "router") and _inside(parent, (*_FFN_WORDS, "moe")):  # a mixture of experts' router
        return "router"
    role = _shared_name_role(parts, leaf, parent) or _ROLE_OF_LEAF.get(leaf)
    if role in ("q", "k", "v", "attn_out") and not _inside(".".join(parts[:-1]), _ATTENTION_WORDS):
        role = None  # a bare `q` or `o` outside attention is not an attention projection
    return role or "feature_proj"


def _shared_name_role(parts: list[str], leaf: str, parent: str) -> str | None:
    """Roles of leaf names that several roles share, told apart by where they sit."""
    if leaf == "c_proj":  # GPT-2 uses one name for the attention output and the second FFN layer
        return "attn_out" if _inside(parent, _ATTENTION_WORDS) else "ffn2"
    if leaf == "dense" and parent == "intermediate":  # BERT-style: intermediate.dense
        return "ffn1"
    if leaf == "dense" and parent == "output":  # attention.output.dense, or (FFN) output.dense
        return "attn_out" if _inside(".".join(parts[:-2]), _ATTENTION_WORDS) else "ffn2"
    return None


# Roles that decide their op's group whatever the module path says.
_GROUP_OF_ROLE = {**dict.fromkeys(("q", "k", "v", "qkv", "attn_out", "bmm_qk", "bmm_av", "softmax"), "attention"),
                  "ffn1": "ffn", "ffn2": "ffn", "head": "head", "pooler": "head", "patch_embed": "embedding",
                  "pos_conv": "embedding"}


def group_of(role: str, path: str, layer: int) -> str:
    """The layer group of an op: from its role where that decides it, else from the module path."""
    if role in _GROUP_OF_ROLE:
        return _GROUP_OF_ROLE[role]
    if _inside(path, _FRONTEND_WORDS) or role == "conv":
        return "frontend"
    if role in ("layernorm", "groupnorm"):
        return "norm"
    if role == "embedding" or _inside(path, ("embed",)):
        return "embedding"
    return _group_of_path(path, layer)


def _group_of_path(path: str, layer: int) -> str:
    """The group of an op whose role does not decide it, from the words of its module path."""
    if _inside(path, _HEAD_WORDS):
        return "head"
    if _inside(path, _ATTENTION_WORDS):
        return "attention"
    if _inside(path, _FFN_WORDS) or layer >= 0:
        return "ffn"  # block-level element-wise work (e.g. a residual add in a block's own forward)
    return "embedding"
