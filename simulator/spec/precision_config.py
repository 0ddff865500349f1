"""The ``precision`` section of a run config: formats per side (weights, activations, KV cache) and
their scale granularity (pydantic schema; resolution per op is in policy.py).

```yaml
precision:
  weights: int4                 # weight matrices of every op not matched below
  activations: native           # inputs of matrix ops: a format, or "native" (the chip's vector-unit
                                #   format, in which activations travel between ops: nothing to quantize;
                                #   as weights: kept unquantized in that format)
  default: int8                 # both sides where weights/activations are not given
  ops: {bmm_av: int8, ffn2: {weights: int8}}   # a format (both sides) or {weights: .., activations: ..}
  groups: {}                    # per layer group, same values
  layers: {"0-7": {weights: int2}}
  bias: int32
  kv_cache: int8                # stored format of a decoder's KV cache
  weight_scales: {per: group, group_size: 128, scale_bits: 16, zero_point_bits: 4}
  activation_scales: {per: token, scale_bits: 16}
  kv_scales: {per: head, scale_bits: 16}
```

Scales: integer and FP8 weights carry scales at ``weight_scales`` granularity (default: one 16-bit
scale per output channel, ``scale_bits`` kept from earlier configs); fp16/bf16/fp32 weights carry
none; MX and NVFP4 weights carry their format's block scales and no others.
"""

from __future__ import annotations

import itertools
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from simulator.formats.precision import Precision, parse_precision
from simulator.spec.config_io import SizePair, StrictModel, reject_unknown_keys
from workloads.errors import InputError
from workloads.vocabulary import COMPUTE_ROLES, GROUPS, NO_WEIGHT_MATRIX_ROLES

NATIVE = "native"
MAX_GROUP = 2**31 - 1  # a group size is a 31-bit count, like every size in a trace
_RANGE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def check_format(text: str, allow_native: bool = False) -> str:
    if allow_native and str(text).strip().lower() == NATIVE:
        return NATIVE
    try:
        return parse_precision(text).name
    except InputError as exc:
        raise ValueError(str(exc)) from None


def parse_layer_range(text: str) -> tuple[int, int]:
    """'3' -> (3, 3); '0-7' -> (0, 7), inclusive."""
    match = _RANGE.fullmatch(str(text))
    if not match:
        raise ValueError(f"layer range {text!r} is not of the form A-B or A")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if last < first:
        raise ValueError(f"layer range {text!r} ends before it starts")
    return first, last


class Sides(StrictModel):
    """Formats of one level for weights and activations apart; a side left out falls to the next level."""

    weights: str | None = None
    activations: str | None = None

    @field_validator("weights", "activations")
    @classmethod
    def _format(cls, text: str | None) -> str | None:
        return None if text is None else check_format(text, allow_native=True)

    @model_validator(mode="after")
    def _some(self) -> Sides:
        if self.weights is None and self.activations is None:
            raise ValueError("give weights, activations or both")
        return self


Setting = str | Sides


def _sides(value: Setting) -> Sides:
    return Sides(weights=value, activations=value) if isinstance(value, str) else value


def _check_setting(value: Setting) -> Setting:
    return check_format(value, allow_native=True) if isinstance(value, str) else value


class WeightScales(StrictModel):
    per: Literal["tensor", "channel", "group", "block"] = Field(
        "channel", description="one scale per weight tensor, per output channel, per group of group_size "
                               "input channels (a tail group where it does not divide K), or per block of "
                               "block_size output x input channels (block-wise FP8)")
    group_size: int | None = Field(None, description="input channels per scale, with per: group")
    block_size: SizePair | None = Field(None, description="output x input channels per scale, with per: "
                                                                  "block")
    scale_bits: int = Field(16, ge=0, le=64, description="bits of one scale (0: not counted)")
    zero_point_bits: int = Field(0, ge=0, le=32, description="bits of one zero point (integer weights only)")

    @model_validator(mode="after")
    def _group(self) -> WeightScales:
        if self.per == "group":
            if self.group_size is None:
                raise ValueError("per: group needs group_size")
            if not 0 < self.group_size <= MAX_GROUP:
                raise ValueError(f"group_size must be between 1 and {MAX_GROUP} (a 31-bit size), "
                                 f"got {self.group_size}")
        elif self.group_size is not None:
            raise ValueError(f"group_size applies to per: group, not per: {self.per}")
        if (self.per == "block") != (self.block_size is not None):
            raise ValueError("per: block takes block_size (output x input channels), and only it does")
        if self.block_size is not None and not all(0 < size <= MAX_GROUP for size in self.block_size):
            raise ValueError(f"block_size must be two sizes between 1 and {MAX_GROUP}, got {list(self.block_size)}")
        return self


class ActivationScales(StrictModel):
    per: Literal["tensor", "token"] = Field(
        "tensor", description="one static scale per tensor, or a dynamic scale per token (the vector unit "
                              "finds each token's absolute maximum: the 'absmax' op)")
    scale_bits: int = Field(16, gt=0, le=64, description="bits of one per-token scale (stored with the tensor)")
    group_size: int | None = Field(None, gt=0, le=MAX_GROUP, description="with per: token, one scale per "
                                   "group_size channels of each token (block-wise FP8's 128)")

    @model_validator(mode="after")
    def _group(self) -> ActivationScales:
        if self.group_size is not None and self.per != "token":
            raise ValueError("group_size applies to per: token")
        return self


class KvScales(StrictModel):
    per: Literal["tensor", "token", "head"] = Field(
        "head", description="one scale per cache tensor, per token (all heads), or per token and head")
    scale_bits: int = Field(16, gt=0, le=64)
    zero_point_bits: int = Field(0, ge=0, le=32)


class PrecisionConfig(StrictModel):
    default: str | None = Field(None, description="weights and activations of every op not matched elsewhere")
    weights: str | None = None
    activations: str | None = None
    ops: dict[str, Setting] = Field(default_factory=dict)
    groups: dict[str, Setting] = Field(default_factory=dict)
    layers: dict[str, Setting] = Field(default_factory=dict)
    bias: str | None = None
    kv_cache: str | None = Field(None, description="stored format of a decoder's KV cache (default: that of the "
                                                   "attention BMMs reading it)")
    scale_bits: int | None = Field(None, ge=0, le=64, description="bits of one per-output-channel weight "
                                   "scale (default 16; kept from earlier configs: give weight_scales instead)")
    weight_scales: WeightScales | None = None
    activation_scales: ActivationScales = Field(default_factory=ActivationScales)
    kv_scales: KvScales | None = None

    @field_validator("bias", "kv_cache")
    @classmethod
    def _one(cls, text: str | None) -> str | None:
        return None if text is None else check_format(text)

    @field_validator("default", "weights", "activations")
    @classmethod
    def _side_default(cls, text: str | None) -> str | None:
        return None if text is None else check_format(text, allow_native=True)

    @field_validator("ops")
    @classmethod
    def _ops(cls, table: dict[str, Setting]) -> dict[str, Setting]:
        reject_unknown_keys(table, COMPUTE_ROLES, "op role")
        for role, value in table.items():
            if isinstance(value, Sides) and value.weights is not None and role in NO_WEIGHT_MATRIX_ROLES:
                raise ValueError(f"ops.{role}: has no weights to give a format")
        return {role: _check_setting(value) for role, value in table.items()}

    @field_validator("groups")
    @classmethod
    def _groups(cls, table: dict[str, Setting]) -> dict[str, Setting]:
        reject_unknown_keys(table, GROUPS, "layer group")
        return {key: _check_setting(value) for key, value in table.items()}

    @field_validator("layers")
    @classmethod
    def _layers(cls, table: dict[str, Setting]) -> dict[str, Setting]:
        spans = sorted((parse_layer_range(key), key, _sides(_check_setting(v))) for key, v in table.items())
        for (first_span, first_key, first), (second_span, second_key, second) in itertools.combinations(spans, 2):
            if second_span[0] <= first_span[1] and first != second:
                raise ValueError(f"layer ranges {first_key!r} and {second_key!r} overlap with different "
                                 f"precisions ({_describe(first)}, {_describe(second)})")
        return {key: _check_setting(value) for key, value in table.items()}

    @model_validator(mode="after")
    def _consistent(self) -> PrecisionConfig:
        if self.default is None and (self.weights is None or self.activations is None):
            raise ValueError("give default, or both weights and activations")
        if self.weight_scales is not None and self.scale_bits is not None:
            raise ValueError("give scale_bits inside weight_scales, not both")
        self._check_weight_scales()
        self._check_kv_scales()
        return self

    def _check_weight_scales(self) -> None:
        weight_formats = {parse_precision(name) for name in self.named_formats("weights")}
        scales = self.weight_scales
        if scales is not None and scales.zero_point_bits:
            floats = sorted(p.name for p in weight_formats if p.is_float and (p.block is not None or p.bits < 16))
            if floats:
                raise ValueError(f"weight_scales.zero_point_bits: {', '.join(floats)} weights are floats, which "
                                 "take no zero point")
        if scales is not None and scales.per == "group":
            for fmt in sorted(weight_formats):
                if fmt.block is not None and fmt.block.block != scales.group_size:
                    raise ValueError(f"weight_scales.group_size {scales.group_size}: {fmt} blocks are "
                                     f"{fmt.block.block} elements by its specification")

    def _check_kv_scales(self) -> None:
        if self.kv_scales is None:
            return
        if self.kv_cache is None:
            raise ValueError("kv_scales applies to a quantized cache: give kv_cache too")
        kv = parse_precision(self.kv_cache)
        if self.kv_scales.zero_point_bits and kv.is_float:
            raise ValueError(f"kv_scales.zero_point_bits: the {kv} cache is a float format, which takes no "
                             "zero point")

    def named_formats(self, side: str) -> set[str]:
        """Every format the config names for ``side`` ("weights" or "activations"), "native" excluded."""
        values = [self.default, getattr(self, side)]
        for table in (self.ops, self.groups, self.layers):
            values += [getattr(_sides(v), side) for v in table.values()]
        return {v for v in values if v is not None and v != NATIVE}

    @property
    def effective_weight_scales(self) -> WeightScales:
        if self.weight_scales is not None:
            return self.weight_scales
        return WeightScales() if self.scale_bits is None else WeightScales(scale_bits=self.scale_bits)

    def effective_kv_scales(self, kv: Precision) -> KvScales | None:
        """Scales of a ``kv`` cache besides a block format's own: the configured ones, else per head (16 bits)
        for integers and none for floats and block formats."""
        if self.kv_scales is not None:
            return self.kv_scales
        return None if kv.is_float or kv.block is not None else KvScales()


def _describe(sides: Sides) -> str:
    if sides.weights == sides.activations:
        return str(sides.weights)
    return "/".join(f"{side} {value}" for side, value in (("weights", sides.weights),
                                                           ("activations", sides.activations)) if value)


def resolve_side(spec: PrecisionConfig, side: str, layer: int, group: str, role: str) -> str:
    """The format name (or "native") one side of an op gets: layers > groups > ops > side > default."""
    for key, value in spec.layers.items():
        first, last = parse_layer_range(key)
        chosen_here: str | None = getattr(_sides(value), side)
        if layer >= 0 and first <= layer <= last and chosen_here is not None:
            return chosen_here
    for table, key in ((spec.groups, group), (spec.ops, role)):
        in_table: str | None = getattr(_sides(table[key]), side) if key in table else None
        if in_table is not None:
            return in_table
    chosen: str | None = getattr(spec, side)
    name = chosen if chosen is not None else spec.default
    assert isinstance(name, str), "validated: a default, or both sides, are given"
    return name
