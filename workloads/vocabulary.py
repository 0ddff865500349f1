"""The names every stage agrees on: op kinds, layer groups, op roles, tensor kinds, the vector unit's ops,
the ops a fused pass runs around, and the report's categories. A name is interpreted here; other modules
import it."""

from __future__ import annotations

MATRIX_KINDS = ("gemm", "bmm", "conv")
VECTOR_KIND = "vector"
COLLECTIVE_KIND = "collective"  # data moved between the chips of a system (workloads.parallel)
KINDS = (*MATRIX_KINDS, VECTOR_KIND, COLLECTIVE_KIND)
GROUPS = ("attention", "ffn", "embedding", "frontend", "norm", "head")
TENSOR_KINDS = ("input", "activation", "weight", "state")

# Roles of the per-block linear layers (q/k/v may be fused into one "qkv" GEMM, as in GPT-2).
LINEAR_ROLES = ("q", "k", "v", "qkv", "attn_out", "ffn1", "ffn2")
BMM_ROLES = ("bmm_qk", "bmm_av")
# The six per-block linear layers that the paper prunes 2:4 (GPT-2's fused qkv stands for q, k, v).
PRUNED_LINEAR_ROLES = ("q", "k", "v", "attn_out", "ffn1", "ffn2")
OTHER_MATRIX_ROLES = ("conv", "feature_proj", "pos_conv", "patch_embed", "pooler", "router", "head")
VECTOR_ROLES = ("embedding", "add", "mul", "concat", "mask_embed", "layernorm", "rmsnorm", "groupnorm", "softmax",
                "gelu", "relu", "tanh", "silu", "rope", "rope_table", "topk")
# Collectives: every chip ends with the sum of all chips' buffers (all_reduce) or with all chips' shards
# (all_gather), or sends each other chip its share of its buffer (all_to_all); a pipeline stage's output goes
# to the next stage's chips (send).
COLLECTIVE_ROLES = ("all_reduce", "all_gather", "all_to_all", "send")
COMPUTE_ROLES = (*LINEAR_ROLES, *BMM_ROLES, *OTHER_MATRIX_ROLES, *VECTOR_ROLES)  # work a chip's units do
ROLES = (*COMPUTE_ROLES, *COLLECTIVE_ROLES)
WEIGHT_MATRIX_ROLES = (*LINEAR_ROLES, *OTHER_MATRIX_ROLES)  # matrix ops whose B operand is a weight
NO_WEIGHT_MATRIX_ROLES = (*BMM_ROLES, *(r for r in VECTOR_ROLES if r != "embedding"))  # nothing to store

# Vector ops the SFU may be asked to run: every vector role a trace can contain, plus the ops the
# simulator inserts (quantize/dequantize where precision changes, bias adds after matrix ops; absmax
# finds the per-token scales of dynamically quantized activations and nm_select the N largest of every
# M values of a pruned attention operand, needed only by configs that ask).
INSERTED_SFU_OPS = ("quantize", "dequantize", "bias")
SFU_OPS = (*VECTOR_ROLES, *INSERTED_SFU_OPS, "absmax", "nm_select")

# Fusion: element-wise steps (FUSIBLE) next to one of these passes run inside it.
FUSION_ANCHORS = ("softmax", "layernorm", "rmsnorm", "groupnorm", "gelu", "relu", "tanh", "silu")
FUSIBLE = ("quantize", "dequantize", "bias", "mul", "add")


def category(op_role: str, unit: str) -> str:
    """Report category: the per-block linear layers (the prunable six), other GEMMs, attention BMMs, the
    SFU op type, or collectives (the chip-to-chip links)."""
    if unit == "sfu":
        return f"sfu_{op_role}"
    if unit == "link":
        return "collective"
    if op_role in BMM_ROLES:
        return "attention_bmm"
    return "linear" if op_role in LINEAR_ROLES else "other_gemm"
