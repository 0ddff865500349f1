"""Number formats: element width, block scaling, and which format holds which (pure).

- Floats: fp32, fp16, bf16, fp8_e4m3, fp8_e5m2 (one value per element, no shared scale).
- Integers: int2 .. int16 and int32 (biases and accumulators).
- Block formats (OCP Microscaling Formats v1.0 and NVIDIA's NVFP4): a block of elements along K shares
  one scale. MX: 32 elements and one 8-bit power-of-two scale (E8M0): mxfp8 (E4M3 elements; mxfp8_e5m2),
  mxfp6 (E2M3; mxfp6_e3m2), mxfp4 (E2M1), mxint8 (8-bit integers). NVFP4: 16 E2M1 elements and one
  FP8 E4M3 scale per block, plus one FP32 scale per tensor. bitsandbytes' NF4 (Dettmers et al., QLoRA,
  2023): 4-bit codes of 16 normal-float levels (a lookup, not a float layout), 64 per FP32 scale; nf4_dq
  double-quantizes those scales (8 bits each, one FP32 scale per 256 of them, one FP32 offset).

``bits`` is the element width; a block format's scales are storage overhead (``BlockFormat``), so a
format's bits per element stored are bits + scale_bits / block (MXFP4: 4 + 8/32 = 4.25).
Whether one format holds another compares elements: a block's shared scale is applied by whatever
dequantizes it (a PE that computes the format natively, or a dequantization step).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from workloads.errors import InputError

# name -> (exponent bits, significand bits including the implicit one)
FLOAT_FORMATS = {"fp32": (8, 24), "fp16": (5, 11), "bf16": (8, 8), "fp8_e4m3": (4, 4), "fp8_e5m2": (5, 3)}
INT_WIDTHS = (*range(2, 17), 32)  # int32 for biases and accumulators
_INT_NAME = re.compile(r"int(\d+)")


@dataclass(frozen=True)
class BlockFormat:
    element: str  # a float element layout ("e2m1": exponent and mantissa bits) or "intN"
    bits: int  # element bits
    block: int  # elements sharing one scale (along K)
    scale_bits: int  # bits of that shared scale
    tensor_scale_bits: int = 0  # one more scale per tensor (NVFP4; NF4's double quantization: its offset)
    scale: str = "e8m0"  # the shared scale's format: a power of two (MX), or an FP8 E4M3 value (NVFP4)
    nested_block: int = 0  # double quantization: block scales sharing one scale of their own ...
    nested_scale_bits: int = 0  # ... of these bits


BLOCK_FORMATS = {
    "mxfp8": BlockFormat("e4m3", 8, 32, 8),
    "mxfp8_e5m2": BlockFormat("e5m2", 8, 32, 8),
    "mxfp6": BlockFormat("e2m3", 6, 32, 8),
    "mxfp6_e3m2": BlockFormat("e3m2", 6, 32, 8),
    "mxfp4": BlockFormat("e2m1", 4, 32, 8),
    "mxint8": BlockFormat("int8", 8, 32, 8),
    "nvfp4": BlockFormat("e2m1", 4, 16, 8, tensor_scale_bits=32, scale="e4m3"),
    # bitsandbytes' NF4 (QLoRA): 16 normal-float levels, an FP32 absolute maximum per 64 elements; with
    # double quantization (nf4_dq) those are 8-bit, with an FP32 scale per 256 of them and an FP32 offset.
    "nf4": BlockFormat("nf4", 4, 64, 32, scale="fp32"),
    "nf4_dq": BlockFormat("nf4", 4, 64, 8, tensor_scale_bits=32, scale="int8", nested_block=256,
                          nested_scale_bits=32),
}
_ELEMENT = re.compile(r"e(\d)m(\d)")


def known_formats() -> str:
    """The names parse_precision accepts, for error messages."""
    return f"{', '.join(FLOAT_FORMATS)}, intN (N in 2..16, or 32), {', '.join(BLOCK_FORMATS)}"


@dataclass(frozen=True, order=True)
class Precision:
    bits: int  # element bits (a block format's shared scales are not included)
    name: str

    @property
    def block(self) -> BlockFormat | None:
        """The block-scaling layout of an MX or NVFP4 format, None for any other."""
        return BLOCK_FORMATS.get(self.name)

    @property
    def float_fields(self) -> tuple[int, int] | None:
        """(exponent bits, significand bits with the implicit one) of a float element, None for integers."""
        if self.name in FLOAT_FORMATS:
            return FLOAT_FORMATS[self.name]
        block = self.block
        match = _ELEMENT.fullmatch(block.element) if block is not None else None
        return (int(match.group(1)), int(match.group(2)) + 1) if match else None

    @property
    def is_float(self) -> bool:
        return self.float_fields is not None

    @property
    def element_name(self) -> str:
        """The format of one element without block scales: the name itself, or a block format's element
        ("fp4_e2m1" for mxfp4 and nvfp4, "fp8_e4m3" for mxfp8, "int8" for mxint8)."""
        block = self.block
        if block is None:
            return self.name
        if block.element.startswith("int") or not _ELEMENT.fullmatch(block.element):
            return block.element  # integers, NF4's lookup codes
        return f"fp{block.bits}_{block.element}"

    def __str__(self) -> str:
        return self.name

    def represents(self, other: Precision) -> bool:
        """True when every element of ``other`` is exactly representable in this format's elements."""
        mine, theirs = self.float_fields, other.float_fields
        if theirs is not None:
            return mine is not None and mine[0] >= theirs[0] and mine[1] >= theirs[1]
        if mine is not None:
            return mine[1] >= other.bits  # integers up to the significand width
        return self.bits >= other.bits


@functools.lru_cache(maxsize=256)
def parse_precision(text: object) -> Precision:
    """A format name (see ``known_formats``); anything else is an input error that lists the known ones."""
    name = str(text).strip().lower()
    if name in FLOAT_FORMATS:
        return Precision(int(name[2:].split("_")[0]), name)
    if name in BLOCK_FORMATS:
        return Precision(BLOCK_FORMATS[name].bits, name)
    match = _INT_NAME.fullmatch(name)
    if match and int(match.group(1)) in INT_WIDTHS:
        return Precision(int(match.group(1)), name)
    raise InputError(f"unknown format {text!r}; known: {known_formats()}")


def compute_format(weights: Precision, activations: Precision, supported: Sequence[Precision]) -> Precision | None:
    """The format a product of ``weights`` and ``activations`` runs in: the narrowest supported one that
    holds both operands (W4A16 -> fp16, W4A8 -> int8), None when no supported format holds both.
    A unit of the operands' own kind comes first (integers prefer a wider integer unit to a float one);
    between equally narrow ones, block-scaled operands prefer a block-format unit, which applies their
    scales itself, and others a plain one."""
    return _compute_format(weights, activations, tuple(supported))


@functools.lru_cache(maxsize=4096)  # lowering asks for every product of every pass
def _compute_format(weights: Precision, activations: Precision, supported: tuple[Precision, ...]) -> Precision | None:
    if weights == activations and weights in supported:
        return weights
    candidates = [p for p in supported if p.represents(weights) and p.represents(activations)]
    if not candidates:
        return None
    integer_operands = not (weights.is_float or activations.is_float)
    block_operands = weights.block is not None or activations.block is not None
    return min(candidates, key=lambda p: (p.is_float == integer_operands, p.bits,
                                          (p.block is not None) != block_operands, p.name))
