"""What the optional capabilities a hardware lists add: area (um2 per PE, mm2 for the decompressor) and
energy per use (pJ). Without them a preset would get skipping, in-PE dequantization and decompression
for free. Multiplexers are priced per 2:1 multiplexer bit (``mux2_bit``, ``mux2_bit_area``); the rest
from the table's multipliers, adders and registers.

- N:M zero-skipping (``sparse.patterns``): each MAC lane picks its activation among M by the kept
  weight's index, an M:1 multiplexer of the activation's width ((M - 1) multiplexer bits per bit),
  and holds the index (ceil(log2 M) register bits). M is the largest listed.
- Unstructured zero-skipping (``sparse.unstructured``): each lane picks its next non-zero weight's
  activation among the W = 8 it has staged (ASSUMED window: the timing model lets a lane reach any
  weight of its column, which no selector does at full depth), W - 1 multiplexer bits per bit and
  ceil(log2 W) index bits, and detects zero weights (one multiplexer bit per weight bit). With both,
  one multiplexer of the wider window serves.
- Every MAC issued on a product the PEs skip switches its lane's multiplexer: (M - 1) x bits
  multiplexer bits of the compute format.
- Gating PEs (``sparse.mode: gate``) select nothing: each lane has a zero detector (one multiplexer bit
  per weight bit) that clock-gates its slot, whatever pattern or mask the zeros follow.
- In-PE dequantization (``dequantize_in_pe``): each lane of the vector unit's format (the format
  dequantized weights compute in) has a multiplier in that format and a zero-point adder as wide as
  the widest listed format, and the PE a scale register in that format; each weight a PE loads
  dequantized costs one multiply and one add.
- Decompressor (``sparse.decompressor``): on every array column, an expansion multiplexer (M:1, M the
  largest listed pattern's, else 4 for 2:4-compressed weights: assumed) per bit of the PE's widest
  weight word; each weight element it expands costs (M - 1) x bits multiplexer bits.

A PE's extra area is that of its most demanding format, as the PE datapath itself is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simulator.energy.primitives import Scaled, add_area_um2, int_add_pj, mult_area_um2, mult_pj
from simulator.formats.precision import Precision, parse_precision
from simulator.formats.sparsity import SparsityPattern
from simulator.spec.hardware import Hardware

UNSTRUCTURED_WINDOW = 8  # ASSUMED: activations a lane of unstructured-skipping PEs selects among
DECOMPRESSOR_DEFAULT_M = 4  # ASSUMED: with no pattern listed, the decompressor expands 2:4-compressed weights


@dataclass(frozen=True)
class CapabilityCosts:
    pe_um2: float  # added to every PE
    decompressor_mm2: float  # the chip's decompressors (0 without one)
    skip_select_pj: dict[str, float]  # per MAC issued on a product the PEs skip, by compute format
    dequantize_pj: float  # per weight a PE dequantizes as it loads it
    decompress_pj: dict[str, float]  # per weight element the decompressor expands, by compute format


def _largest_m(hardware: Hardware) -> int:
    return max((SparsityPattern.parse(text).m for text in hardware.sparse.patterns), default=0)


def _select_window(hardware: Hardware) -> int:
    """Inputs of a lane's skip multiplexer (0: the PEs skip nothing, or gate instead)."""
    if hardware.sparse.mode == "gate":
        return 0
    window = _largest_m(hardware)
    return max(window, UNSTRUCTURED_WINDOW) if hardware.sparse.unstructured else window


def _skip_um2(scaled: Scaled, hardware: Hardware, precision: Precision, lanes: int) -> float:
    sparse = hardware.sparse
    handles = bool(sparse.patterns) or sparse.unstructured
    if not handles:
        return 0.0
    mux = scaled.value("mux2_bit_area", "zero-skipping")
    detector = precision.bits * mux
    if sparse.mode == "gate":
        return lanes * detector
    window = _select_window(hardware)
    per_lane = (window - 1) * precision.bits * mux
    per_lane += math.ceil(math.log2(window)) * scaled.value("register_bit_area", "zero-skipping")
    if sparse.unstructured:
        per_lane += detector
    return lanes * per_lane


def _dequantizer(hardware: Hardware) -> tuple[Precision, Precision] | None:
    """(the format dequantized weights compute in, the widest stored format) of in-PE dequantization."""
    if not hardware.dequantize_in_pe:
        return None
    widest = max(parse_precision(name).bits for name in hardware.dequantize_in_pe)
    return hardware.sfu_precision, Precision(widest, f"int{widest}")


def _dequantize_um2(scaled: Scaled, hardware: Hardware) -> float:
    formats = _dequantizer(hardware)
    if formats is None:
        return 0.0
    target, stored = formats
    lanes = hardware.macs_per_pe.get(target.name, 1)
    register = scaled.value("register_bit_area", "in-PE dequantization")
    return lanes * (mult_area_um2(scaled, target) + add_area_um2(scaled, stored)) + target.bits * register


def capability_costs(scaled: Scaled, hardware: Hardware) -> CapabilityCosts:
    precisions = hardware.supported_precisions
    skip = max(_skip_um2(scaled, hardware, p, hardware.macs_per_pe[p.name]) for p in precisions)
    pe_um2 = skip + _dequantize_um2(scaled, hardware)
    selects: dict[str, float] = {}
    for precision in precisions:
        window = _select_window(hardware)
        selects[precision.name] = (window - 1) * precision.bits * scaled.value("mux2_bit", "zero-skipping") \
            if window else 0.0
    formats = _dequantizer(hardware)
    dequantize = mult_pj(scaled, formats[0]) + int_add_pj(scaled, formats[1].bits) if formats else 0.0
    decompressor_mm2, expands = 0.0, dict.fromkeys((p.name for p in precisions), 0.0)
    if hardware.sparse.decompressor:
        m = _largest_m(hardware) or DECOMPRESSOR_DEFAULT_M
        word = max(p.bits * hardware.macs_per_pe[p.name] for p in precisions)
        columns = hardware.arrays * hardware.array.cols
        decompressor_mm2 = columns * word * (m - 1) * scaled.value("mux2_bit_area", "the decompressor") / 1e6
        expands = {p.name: (m - 1) * p.bits * scaled.value("mux2_bit", "the decompressor") for p in precisions}
    return CapabilityCosts(pe_um2, decompressor_mm2, selects, dequantize, expands)
