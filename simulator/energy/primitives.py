"""Primitive costs from an energy table at one hardware's node and voltage: table entries carried there
by the scaling rule, integer and float multiply/add energies (pJ) and areas (um2). The rules are
stated in :mod:`simulator.energy.action_costs`."""

from __future__ import annotations

import math

from simulator.energy.tables import ActionTable, ScalingRule
from simulator.formats.precision import Precision, parse_precision
from simulator.spec.hardware import Hardware
from workloads.errors import InputError


class Scaled:
    """The action table's entries carried to the hardware's node and voltage."""

    def __init__(self, hardware: Hardware, table: ActionTable, rule: ScalingRule | None) -> None:
        energy = hardware.energy
        assert energy is not None
        self.hardware, self.table, self.rule = hardware, table, rule
        self.node, self.vdd = energy.node_nm, energy.vdd_v
        if rule is None and (self.node != table.node_nm or self.vdd != table.vdd_v):
            raise InputError(f"energy table {table.name} is at {table.node_nm:g} nm, {table.vdd_v:g} V; hardware "
                             f"{hardware.name} is at {self.node:g} nm, {self.vdd:g} V and the table names no "
                             "scaling rule")

    def energy_scale(self, node_nm: float, vdd_v: float) -> float:
        if self.rule is None or (node_nm == self.node and vdd_v == self.vdd):
            return 1.0
        return self.rule.energy_scale(node_nm, vdd_v, self.node, self.vdd)

    def area_scale(self, node_nm: float) -> float:
        return 1.0 if self.rule is None or node_nm == self.node else self.rule.area_scale(node_nm, self.node)

    def value(self, name: str, needed_for: str) -> float:
        entry = self.table.entries.get(name)
        if entry is None:
            raise InputError(f"energy table {self.table.name} has no entry {name!r}, needed for {needed_for} "
                             f"on hardware {self.hardware.name}")
        if entry.node_nm is None:  # off-chip
            return entry.value
        if entry.unit == "um2":
            return entry.value * self.area_scale(entry.node_nm)
        return entry.value * self.energy_scale(entry.node_nm, self.table.vdd_v)  # pJ and mW alike


def int_mult_pj(scaled: Scaled, width_a: int, width_b: int) -> float:
    int8 = scaled.value("int8_mult", f"int{width_a} MACs")
    int32 = scaled.value("int32_mult", f"int{width_a} MACs")
    exponent = math.log(int32 / int8) / math.log(4) if int8 > 0 and int32 > 0 else 2.0
    return float(int8 * (width_a * width_b / 64) ** (exponent / 2))


def int_add_pj(scaled: Scaled, bits: int) -> float:
    points = [(width, scaled.value(f"int{width}_add", f"{bits}-bit accumulation")) for width in (8, 16, 32)]
    if bits <= points[0][0]:
        return points[0][1] * bits / points[0][0]
    if bits >= points[-1][0]:
        return points[-1][1] * bits / points[-1][0]
    for (low, low_pj), (high, high_pj) in zip(points, points[1:], strict=False):
        if low <= bits <= high:
            return low_pj + (bits - low) / (high - low) * (high_pj - low_pj)
    raise AssertionError("unreachable")  # pragma: no cover


def float_accumulator(hardware: Hardware) -> str:
    bits = hardware.accumulator_bits
    if bits not in (16, 32):
        raise InputError(f"hardware {hardware.name}: a float accumulator of {bits} bits has no energy entry "
                         "(fp32 for 32 bits, fp16 for 16)")
    return f"fp{bits}"


def mac_pj(scaled: Scaled, precision: Precision) -> float:
    """One multiply-accumulate computing in ``precision`` with the hardware's accumulator."""
    hardware = scaled.hardware
    why = f"{precision} MACs"
    if precision.is_float:
        accumulator = float_accumulator(hardware)
        mac = scaled.value(f"{precision.element_name}_mult", why) + scaled.value(f"{accumulator}_add", why)
    else:
        mac = int_mult_pj(scaled, precision.bits, precision.bits) + int_add_pj(scaled, hardware.accumulator_bits)
    block = precision.block
    if block is None:
        return mac
    scaling = scaled.value("int8_add" if block.scale == "e8m0" else f"fp8_{block.scale}_mult", why)
    return mac + scaling / block.block


def mult_area_um2(scaled: Scaled, precision: Precision) -> float:
    why = f"{precision} multiplier area"
    per_bit_squared = scaled.value("int32_mult_area", why) / 1024
    fields = precision.float_fields
    if fields is not None:
        exponent, significand = fields
        return significand**2 * per_bit_squared + exponent * scaled.value("int32_add_area", why) / 32
    return precision.bits**2 * per_bit_squared


def add_area_um2(scaled: Scaled, precision: Precision) -> float:
    per_bit = scaled.value("int32_add_area", f"{precision} adder area") / 32
    fields = precision.float_fields
    if fields is not None:
        exponent, significand = fields
        return (exponent + significand) * per_bit
    return precision.bits * per_bit


def accumulator_format(hardware: Hardware, precision: Precision) -> Precision:
    if precision.is_float:
        return parse_precision(float_accumulator(hardware))
    return Precision(hardware.accumulator_bits, f"int{hardware.accumulator_bits}")


def mult_pj(scaled: Scaled, precision: Precision) -> float:
    """One multiply in ``precision`` (a float format's element multiply, or an integer one)."""
    if precision.is_float:
        return scaled.value(f"{precision.element_name}_mult", f"{precision} multiplies")
    return int_mult_pj(scaled, precision.bits, precision.bits)
