"""Bit-exact parameter storage under a precision/sparsity policy (pure, no I/O).

Per parameter tensor:

- dense b-bit weights: b bits per value;
- N:M sparse weights (groups of M along K, the input dimension): the kept values at b bits plus a
  ceil(log2 M)-bit position per kept value, i.e. N*(b + ceil(log2 M))/M bits per weight; a trailing
  partial group of r < M weights keeps min(N, r);
- unstructured sparse weights: the non-zero values at b bits plus a 1-bit-per-weight bitmap;
- outlier-aware storage: ``dims`` input dimensions of each weight matrix kept dense at the outlier
  precision, plus ceil(log2 K) bits naming each of them; the other K - dims rows as above;
- scales (see precision_config), reported apart from the values: integer and FP8 weights carry one
  scale (plus a zero point, if any) per tensor, per output channel, or per group of G input channels
  along K (ceil(K'/G) groups per output channel, K' the rows not kept as outliers: a tail group where
  G does not divide K'); parameters of vector ops (embedding tables, norm gains) count their groups over
  all their elements, and one scale per tensor when per channel. MX and NVFP4 weights carry their block
  scales the same way (block = group), plus NVFP4's one FP32 scale per tensor; fp16/bf16/fp32 none.
  E.g. INT4 with G = 128, FP16 scales and 4-bit zero points: 4 + 20/128 = 4.15625 bits per weight;
- biases at their own precision (their layer's unless the policy says otherwise).

Compression ratios compare against the same parameters stored dense at FP32, at FP16, and dense at
the precisions the policy assigns (no sparsity, no outliers, no scales).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from simulator.formats.precision import Precision, parse_precision
from simulator.formats.scales import takes_scales
from simulator.spec.run_config import Policy
from simulator.units import ceil_div
from workloads.ops import Op, Trace, index_bits_per_value
from workloads.vocabulary import GROUPS, LINEAR_ROLES

if TYPE_CHECKING:
    import numpy as np

MIB_BITS = 8 * 1024 * 1024


@dataclass(frozen=True)
class OpStorage:
    """Storage of one op's parameters, in bits (values, metadata, scales and biases apart)."""

    name: str
    layer: int
    role: str
    group: str
    weight_params: int
    bias_params: int
    weight_precision: str
    bias_precision: str
    value_bits: int  # weight values, outlier values included
    index_bits: int  # N:M positions, unstructured bitmap, outlier dimension indices
    scale_bits: int
    bias_bits: int
    dense_weight_bits: int  # the same weights dense at their assigned precision
    sparse: str  # "dense", an N:M pattern, or "unstructured"

    @property
    def weight_bits(self) -> int:
        """Compressed weights without scale factors: values and metadata."""
        return self.value_bits + self.index_bits

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params


def op_storage(op: Op, policy: Policy, nonzeros: Callable[[Op], int] | None = None) -> OpStorage:
    """Storage of ``op``'s parameters; ``nonzeros(op)`` counts kept weights of an unstructured mask."""
    precision = policy.weight_precision(op)
    bias_precision = policy.bias_precision(op)
    value_bits = index_bits = scale_bits = 0
    sparse = "dense"
    config = policy.config
    if op.weight_params:
        is_matrix = op.is_matrix and op.has_weight_operand
        if is_matrix:
            matrices, depth, width = op.batch, op.k, op.n
            outliers = config.outliers
            outlier_dims = min(outliers.dims, depth) if outliers is not None else 0
            if outliers is not None and outlier_dims:
                outlier_bits = parse_precision(outliers.precision).bits
                value_bits += matrices * outlier_dims * width * outlier_bits
                index_bits += matrices * outlier_dims * index_bits_per_value(depth)
            rest = depth - outlier_dims
            if policy.prunes(op):
                pattern = policy.pattern
                if pattern is not None:
                    kept = matrices * width * pattern.kept(rest)
                    value_bits += kept * precision.bits
                    index_bits += kept * index_bits_per_value(pattern.m)
                    sparse = str(pattern)
                else:
                    if nonzeros is None:
                        raise ValueError(f"{op.name}: unstructured sparsity needs the mask's non-zero count")
                    value_bits += nonzeros(op) * precision.bits
                    index_bits += matrices * rest * width  # bitmap
                    sparse = "unstructured"
            else:
                value_bits += matrices * rest * width * precision.bits
            scale_bits = weight_scale_bits(precision, policy, matrices * width, rest, matrices)
            # Parameters beyond the matrices themselves (e.g. the weight-norm gains of wav2vec2's
            # positional convolution) are stored dense.
            value_bits += (op.weight_params - matrices * depth * width) * precision.bits
        else:
            value_bits = op.weight_params * precision.bits
            scale_bits = weight_scale_bits(precision, policy, 0, op.weight_params)
    return OpStorage(
        name=op.name, layer=op.layer, role=op.role, group=op.group, weight_params=op.weight_params,
        bias_params=op.bias_params, weight_precision=precision.name, bias_precision=bias_precision.name,
        value_bits=value_bits, index_bits=index_bits, scale_bits=scale_bits,
        bias_bits=op.bias_params * bias_precision.bits, dense_weight_bits=op.weight_params * precision.bits,
        sparse=sparse)


def _scale_layout(precision: Precision, policy: Policy) -> tuple[str, int | tuple[int, int] | None, int] | None:
    """(per, group size (a block's output x input channels, per block), bits of one scale with its zero
    point) of ``precision`` weights; None for formats that take no scales."""
    block = precision.block
    if block is not None:
        return "group", block.block, block.scale_bits
    if not takes_scales(precision):
        return None
    scales = policy.config.precision.effective_weight_scales
    return scales.per, scales.group_size or scales.block_size, scales.scale_bits + scales.zero_point_bits


def weight_scale_bits(precision: Precision, policy: Policy, channels: int, depth: int, matrices: int = 1) -> int:
    """Scale (and zero-point) bits of ``channels`` output channels (over ``matrices`` matrices) of ``depth``
    input rows each, or, with ``channels`` 0, of a vector op's ``depth`` parameters (one tensor)."""
    layout = _scale_layout(precision, policy)
    if layout is None:
        return 0
    per, group, bits = layout
    block = precision.block
    if per == "block":
        assert isinstance(group, tuple)  # a block layout names its output x input channels
        return matrices * ceil_div(max(channels, 1) // matrices, group[0]) * ceil_div(depth, group[1]) * bits
    if per == "group":
        assert isinstance(group, int)  # a group layout names its size
        scales = max(channels, 1) * ceil_div(depth, group)
        nested = ceil_div(scales, block.nested_block) * block.nested_scale_bits if block and block.nested_block else 0
        return scales * bits + nested + (block.tensor_scale_bits if block is not None else 0)
    return (channels if per == "channel" and channels else 1) * bits


@dataclass(frozen=True)
class StorageSummary:
    """Totals of a set of tensors; ratios are dense reference bits over stored bits (no scales)."""

    params: int
    bits: int
    scale_bits: int
    dense_bits: int

    @property
    def bits_with_scales(self) -> int:
        return self.bits + self.scale_bits

    def ratio(self, reference_bits: int, with_scales: bool = False) -> float:
        stored = self.bits_with_scales if with_scales else self.bits
        return reference_bits / stored if stored else float("nan")

    def as_dict(self) -> dict[str, float | int]:
        return {
            "params": self.params,
            "bits_per_param": self.bits_with_scales / self.params if self.params else float("nan"),
            "bits": self.bits,
            "scale_bits": self.scale_bits,
            "bits_with_scales": self.bits_with_scales,
            "mib": self.bits / MIB_BITS,
            "mib_with_scales": self.bits_with_scales / MIB_BITS,
            "compression_vs_fp32": self.ratio(32 * self.params),
            "compression_vs_fp16": self.ratio(16 * self.params),
            "compression_vs_dense": self.ratio(self.dense_bits),
            "compression_vs_fp32_with_scales": self.ratio(32 * self.params, with_scales=True),
        }


def summarize(rows: Iterable[OpStorage], include_bias: bool = True) -> StorageSummary:
    params = bits = scales = dense = 0
    for row in rows:
        params += row.weight_params
        bits += row.weight_bits
        scales += row.scale_bits
        dense += row.dense_weight_bits
        if include_bias:
            params += row.bias_params
            bits += row.bias_bits
            dense += row.bias_bits
    return StorageSummary(params, bits, scales, dense)


@dataclass(frozen=True)
class Footprint:
    """A model's parameter storage under one policy: per op, and the figures the CLI reports."""

    model: str
    config: str
    ops: tuple[OpStorage, ...]

    @property
    def total(self) -> StorageSummary:
        return summarize(self.ops)

    @property
    def pruned_linear(self) -> StorageSummary:
        """Weight matrices (biases excluded) of the per-block linear layers q, k, v, attn_out, ffn1, ffn2."""
        return summarize((row for row in self.ops if row.role in LINEAR_ROLES), include_bias=False)

    def groups(self) -> dict[str, StorageSummary]:
        present = [g for g in GROUPS if any(row.group == g and row.params for row in self.ops)]
        return {g: summarize(row for row in self.ops if row.group == g) for g in present}

    def __str__(self) -> str:
        total = self.total
        return (f"{self.model} under {self.config}: {total.params:,} parameters in {total.bits_with_scales:,} bits "
                f"({total.bits_with_scales / MIB_BITS:.2f} MiB with scales, "
                f"{total.bits_with_scales / total.params if total.params else float('nan'):.4g} bits each)")

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "config": self.config,
            "total": self.total.as_dict(),
            "pruned_linear": self.pruned_linear.as_dict(),
            "groups": {g: s.as_dict() for g, s in self.groups().items()},
        }

    def records(self) -> list[dict[str, Any]]:
        return [{**asdict(row), "weight_bits": row.weight_bits} for row in self.ops if row.params]


def mask_nonzeros(mask_for: Callable[[Op], np.ndarray]) -> Callable[[Op], int]:
    """Kept-weight counter for op_storage from a mask provider (op -> K x N mask)."""
    import numpy as np

    return lambda op: int(np.count_nonzero(mask_for(op))) * op.batch


def parameter_storage(trace: Trace, policy: Policy, nonzeros: Callable[[Op], int] | None = None) -> Footprint:
    policy.check_against(trace)
    return Footprint(trace.model, policy.name, tuple(op_storage(op, policy, nonzeros) for op in trace))
