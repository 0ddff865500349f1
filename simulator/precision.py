"""Number formats: storage width in bits and what a narrower format can fall back to (pure).

Floats: fp32, fp16, bf16. Integers: int2 .. int16 (``int4``, ``int8`` and any width in between) and int32;
storage is exact at the format's width, whatever the hardware can compute.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from workloads.errors import InputError

# name -> (exponent bits, significand bits including the implicit one)
FLOAT_FORMATS = {"fp32": (8, 24), "fp16": (5, 11), "bf16": (8, 8)}
INT_WIDTHS = (*range(2, 17), 32)  # int32 for biases and accumulators
_INT_NAME = re.compile(r"int(\d+)")


@dataclass(frozen=True, order=True)
class Precision:
    bits: int
    name: str

    @property
    def is_float(self) -> bool:
        return self.name in FLOAT_FORMATS

    def __str__(self) -> str:
        return self.name

    def represents(self, other: Precision) -> bool:
        """True when every value of ``other`` is exactly representable in this format."""
        if other.is_float:
            if not self.is_float:
                return False
            exp, sig = FLOAT_FORMATS[self.name]
            other_exp, other_sig = FLOAT_FORMATS[other.name]
            return exp >= other_exp and sig >= other_sig
        if self.is_float:
            return FLOAT_FORMATS[self.name][1] >= other.bits  # integers up to the significand width
        return self.bits >= other.bits


@functools.lru_cache(maxsize=256)
def parse_precision(text: object) -> Precision:
    """``fp32``, ``fp16``, ``bf16``, ``intN`` with 2 <= N <= 16, or ``int32``; anything else is an input error."""
    name = str(text).strip().lower()
    if name in FLOAT_FORMATS:
        return Precision(int(name[2:]), name)
    match = _INT_NAME.fullmatch(name)
    if match and int(match.group(1)) in INT_WIDTHS:
        return Precision(int(match.group(1)), name)
    raise InputError(f"unknown precision {text!r}; use fp32, fp16, bf16, intN with N in 2..16, or int32")


def fallback_precision(requested: Precision, supported: list[Precision]) -> Precision | None:
    """The narrowest supported format that holds every value of ``requested`` (itself if supported).

    Integers prefer a wider integer unit, then a float whose significand is wide enough.
    """
    if requested in supported:
        return requested
    candidates = [p for p in supported if p.represents(requested)]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (p.is_float != requested.is_float, p.bits, p.name))
