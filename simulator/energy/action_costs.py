"""What each action and each component costs on one hardware: energy per action (pJ), static power (mW)
and area (mm2), from its energy tables carried to its node and supply voltage.

The rules (each number comes from a table entry; see configs/energy/horowitz_45nm.yaml):

- Integer multiply: int8_mult x (wa x wb / 64)^(q/2), q fitted through the table's int8 and int32
  multiplies (quadratic-like in width: 0.2 -> 3.1 pJ gives q = 1.98). Integer add at the accumulator
  width: linear between the table's 8/16/32-bit adds, proportional outside them.
- Floating formats: the table's ``<format>_mult``; the accumulate is the add of the float format of
  the accumulator's width (fp32 for 32 bits, fp16 for 16). A MAC is a multiply plus an accumulate;
  packed narrow MACs are charged per MAC.
- Block formats computed natively (MX, NVFP4): their element's MAC (``fp4_e2m1_mult``, ...; mxint8 as
  int8) plus, per block of MACs along K, the scaling of the block's partial sum: an exponent add
  (int8_add) for MX's power-of-two scales, an fp8_e4m3_mult for NVFP4's.
- A gated (or idle, clock-gated) MAC slot costs mac_gated / mac_reference of a MAC.
- Registers: register_bit per bit written (and read once downstream).
- SRAM buffers: the SRAM table's read/write energy per access of the hardware's port width, at the
  capacity of one bank (log-log interpolation), per byte = per access / (port bits / 8); a buffer of
  several banks leaks and takes the area of all of them. A bank smaller than the table's smallest at
  that port width (too few rows for CACTI's SRAM array) is a register file: register_bit per bit
  read or written, register_bit_area per bit, leaking as logic.
- DRAM: dram_<technology> pJ per bit, off-chip, not scaled.
- Vector unit: one lane-cycle is an add and a multiply at the vector unit's format.
- Area: an integer multiplier scales with the product of its operand widths from int32_mult_area, an
  adder with its width from int32_add_area; a float multiplier is its significand product plus an
  exponent adder, a float adder its significand plus exponent bits. A PE holds, for its widest
  format, ``macs_per_pe`` multiply-accumulate lanes, and registers for that format's packed weight and
  activation words plus one partial sum (PE area = the largest over its formats: narrower formats reuse
  the datapath). The vector unit has one multiply and one add per lane at its format.
- Optional capabilities (N:M and unstructured zero-skipping, in-PE dequantization, the decompressor)
  add PE area, a decompressor component and energy per use: see :mod:`simulator.energy.capabilities`.
- Static power: logic leaks int32_add_leakage per int32_add_area (the same density for every PE and
  lane); buffers leak what the SRAM table gives at their capacity and cell type.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from simulator.energy.capabilities import CapabilityCosts, capability_costs
from simulator.energy.primitives import (
    Scaled,
    accumulator_format,
    add_area_um2,
    int_add_pj,
    int_mult_pj,
    mac_pj,
    mult_area_um2,
)
from simulator.energy.tables import (
    SramTable,
    load_action_table,
    load_scaling_rule,
    load_sram_table,
)
from simulator.spec.hardware import Hardware
from workloads.errors import InputError

BUFFERS = ("ifmap", "filter", "ofmap")
COMPONENTS = ("pes", "vector_unit", *(f"{name}_buffer" for name in BUFFERS), "decompressor", "uncore")


@dataclass(frozen=True)
class ActionCosts:
    """Per-action energies (pJ), static power (mW) and area (mm2) of one hardware at its node."""

    mac_pj: dict[str, float]
    gated_fraction: float
    register_bit_pj: float
    buffer_read_pj_per_byte: dict[str, float]
    buffer_write_pj_per_byte: dict[str, float]
    dram_pj_per_byte: float
    vector_lane_pj: float
    static_mw: dict[str, float]
    area_mm2: dict[str, float]
    pe_area_um2: float
    capabilities: CapabilityCosts  # skipping, in-PE dequantization, the decompressor


def pe_area_um2(scaled: Scaled) -> float:
    """The PE sized for its most demanding format: MAC lanes plus weight, activation and psum registers."""
    hardware = scaled.hardware
    register = scaled.value("register_bit_area", "PE registers")
    best = 0.0
    for precision in hardware.supported_precisions:
        lanes = hardware.macs_per_pe[precision.name]
        datapath = lanes * (mult_area_um2(scaled, precision)
                            + add_area_um2(scaled, accumulator_format(hardware, precision)))
        registers = (2 * lanes * precision.bits + hardware.accumulator_bits) * register
        best = max(best, datapath + registers)
    return best


def _sram(scaled: Scaled, sram: SramTable, capacity_bytes: int) -> tuple[float, float, float, float]:
    """(read pJ per byte, write pJ per byte, leakage mW, area mm2) of one buffer at the hardware's node."""
    energy = scaled.hardware.energy
    assert energy is not None
    banks = 1
    if energy.sram_bank_bytes is not None and capacity_bytes > energy.sram_bank_bytes:
        banks = -(-capacity_bytes // energy.sram_bank_bytes)
    bank_bytes = -(-capacity_bytes // banks)
    smallest = sram.smallest_bytes(energy.sram_port_bits, energy.sram_cell)
    if smallest is not None and bank_bytes < smallest:  # too few rows for an SRAM array: flip-flops
        bit_pj = scaled.value("register_bit", "a buffer below the SRAM table")
        area_um2 = 8 * capacity_bytes * scaled.value("register_bit_area", "a buffer below the SRAM table")
        return 8 * bit_pj, 8 * bit_pj, area_um2 * _logic_leakage_mw_per_um2(scaled), area_um2 / 1e6
    point = sram.lookup(bank_bytes, energy.sram_port_bits, energy.sram_cell)
    if scaled.rule is None and (sram.node_nm != scaled.node or sram.vdd_v.get(energy.sram_cell) != scaled.vdd):
        raise InputError(f"SRAM table {sram.name} is at {sram.node_nm:g} nm; hardware {scaled.hardware.name} "
                         f"is at {scaled.node:g} nm and energy table {scaled.table.name} names no scaling rule")
    vdd = sram.vdd_v.get(energy.sram_cell)
    if vdd is None:
        raise InputError(f"SRAM table {sram.name} gives no supply voltage for {energy.sram_cell} cells")
    to_energy = scaled.energy_scale(sram.node_nm, vdd)
    per_byte = to_energy / (energy.sram_port_bits / 8)
    return (point.read_pj * per_byte, point.write_pj * per_byte, banks * point.leakage_mw * to_energy,
            banks * point.area_mm2 * scaled.area_scale(sram.node_nm))


def _logic_leakage_mw_per_um2(scaled: Scaled) -> float:
    return scaled.value("int32_add_leakage", "static power") / scaled.value("int32_add_area", "static power")


def _build(hardware: Hardware) -> ActionCosts:
    energy = hardware.energy
    if energy is None:
        raise InputError(f"hardware {hardware.name} has no energy section: energy and area are not modelled")
    table = load_action_table(energy.table)
    rule = load_scaling_rule(table.scaling) if table.scaling else None
    scaled = Scaled(hardware, table, rule)
    sram = load_sram_table(table.sram)
    precisions = {*hardware.supported_precisions, hardware.sfu_precision}
    macs = {precision.name: mac_pj(scaled, precision) for precision in precisions}
    reference = scaled.value("mac_reference", "gated MAC slots")
    gated = scaled.value("mac_gated", "gated MAC slots") / reference if reference > 0 else 0.0
    reads, writes, static, area = {}, {}, {}, {}
    memory = hardware.memory
    for name in BUFFERS:
        read, write, leak, mm2 = _sram(scaled, sram, getattr(memory, f"{name}_buffer_bytes"))
        reads[name], writes[name] = read, write
        static[f"{name}_buffer"], area[f"{name}_buffer"] = leak, mm2
    sfu = hardware.sfu_precision
    lane_pj = scaled.value(f"{sfu}_add", "the vector unit") + scaled.value(f"{sfu}_mult", "the vector unit") \
        if sfu.is_float else int_mult_pj(scaled, sfu.bits, sfu.bits) + int_add_pj(scaled, sfu.bits)
    extras = capability_costs(scaled, hardware)
    pe_um2 = pe_area_um2(scaled) + extras.pe_um2
    lane_um2 = mult_area_um2(scaled, sfu) + add_area_um2(scaled, sfu)
    leak_per_um2 = _logic_leakage_mw_per_um2(scaled)
    area["pes"] = hardware.pes * pe_um2 / 1e6
    area["vector_unit"] = hardware.sfu_lanes * lane_um2 / 1e6
    static["pes"] = hardware.pes * pe_um2 * leak_per_um2
    static["vector_unit"] = hardware.sfu_lanes * lane_um2 * leak_per_um2
    if extras.decompressor_mm2:
        area["decompressor"] = extras.decompressor_mm2
        static["decompressor"] = extras.decompressor_mm2 * 1e6 * leak_per_um2
    if energy.uncore_mw:
        static["uncore"] = energy.uncore_mw
    order = {name: index for index, name in enumerate(COMPONENTS)}
    return ActionCosts(
        mac_pj=macs, gated_fraction=gated, register_bit_pj=scaled.value("register_bit", "PE registers"),
        buffer_read_pj_per_byte=reads, buffer_write_pj_per_byte=writes,
        dram_pj_per_byte=8 * scaled.value(f"dram_{energy.dram}", f"{energy.dram} DRAM"),
        vector_lane_pj=lane_pj,
        static_mw=dict(sorted(static.items(), key=lambda item: order[item[0]])),
        area_mm2=dict(sorted(area.items(), key=lambda item: order[item[0]])),
        pe_area_um2=pe_um2, capabilities=extras)


@functools.lru_cache(maxsize=64)
def _cached(hardware_json: str) -> ActionCosts:
    return _build(Hardware.model_validate_json(hardware_json))


def action_costs(hardware: Hardware) -> ActionCosts:
    """The hardware's per-action costs (memoised on its whole description); InputError when it has no
    energy section or its tables cannot price what it needs."""
    return _cached(hardware.model_dump_json())
