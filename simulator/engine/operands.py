"""A matrix op's operands as lowering sees them: their sizes, their rows (tokens), the scale groups of
a KV cache, and pruned copies (pure)."""

from __future__ import annotations

from dataclasses import replace

from simulator.formats.sparsity import SparsityPattern
from workloads.errors import InputError
from workloads.ops import Op, Tensor


def operand_elements(op: Op, index: int) -> int:
    """Elements of a matrix op's A (index 0) or B (index 1) operand, as the op reads them."""
    return op.batch * op.m * op.k if index == 0 else op.batch * op.k * op.n


def operand_rows(op: Op, index: int) -> tuple[int, int]:
    """(tokens, elements per token) of a matrix op's A or B operand: A is m tokens of k; B of a BMM is
    n tokens of k (keys, K^T) or k tokens of n (values, probabilities x V)."""
    if index == 0:
        return op.batch * op.m, op.k
    return (op.batch * op.n, op.k) if op.role == "bmm_qk" else (op.batch * op.k, op.n)


def kv_scale_group(state: Tensor, reader: Op, per: str, sequences: int) -> int:
    """Elements per scale of a KV cache read by the attention BMM ``reader``: a head's vector of one
    token (per head), all heads of one token (per token), 0 (one scale per tensor)."""
    if per == "tensor":
        return 0
    if reader.kind != "bmm":
        raise InputError(f"{state.name}: per-{per} cache scales need the attention product that reads it; "
                         f"its first reader is {reader.name}")
    head_dim = reader.k if reader.role == "bmm_qk" else reader.n
    if per == "head":
        return head_dim
    # one product per sequence and key/value head: a token's heads are the products of one sequence (a
    # windowed cache keeps fewer tokens than the product reads, so the cache's size does not say it)
    group, rest = divmod(reader.batch * head_dim, sequences)
    if rest or not group:
        raise ValueError(f"{state.name}: {reader.batch} products of {reader.name} are not {sequences} sequences' heads")
    return group


def pruned(tensor: Tensor, pattern: SparsityPattern, row: int) -> Tensor:
    """``tensor`` keeping ``pattern`` along rows of ``row`` elements (N:M-compressed, with positions)."""
    return replace(tensor, nm_kept=pattern.n, nm_group=pattern.m, nm_row=row)
