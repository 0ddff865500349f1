"""Energy and area tables as data (``configs/energy/*.yaml``): schemas, loading and node scaling.

Three kinds of file:

- an action table (e.g. ``horowitz_45nm``): named entries, each with its value, unit, node and source,
  plus the table's node and supply voltage, the scaling rule that carries it to another node and the
  SRAM table it uses;
- an SRAM table (``sram_cacti7_45nm``): CACTI rows of read/write energy per access, leakage and area
  by capacity, port width and cell type;
- a scaling rule (``stillmaker_baas``): energy factors as polynomials in Vdd per node, and area factors.

Every mapping keyed by names rejects names it does not know; values must be finite and >= 0.
"""

from __future__ import annotations

import bisect
import functools
import math
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from simulator.spec.config_io import StrictModel, read_yaml_mapping, reject_unknown_keys, validate
from simulator.spec.shipped import CONFIG_DIR
from workloads.errors import InputError

ENERGY_DIR = CONFIG_DIR / "energy"
DRAM_TECHNOLOGIES = ("lpddr4", "ddr3", "gddr5", "hbm2")
SRAM_CELLS = ("itrs-hp", "itrs-lstp")
# Every entry an action table may hold, with its unit. Which of them a hardware needs depends on the
# formats it computes in (float formats need their own add/multiply entries) and its DRAM technology.
ENTRY_UNITS = {
    "int8_add": "pJ", "int16_add": "pJ", "int32_add": "pJ", "int8_mult": "pJ", "int32_mult": "pJ",
    "fp16_add": "pJ", "fp16_mult": "pJ", "fp32_add": "pJ", "fp32_mult": "pJ", "bf16_add": "pJ", "bf16_mult": "pJ",
    "fp8_e4m3_mult": "pJ", "fp8_e5m2_mult": "pJ", "fp6_e2m3_mult": "pJ", "fp6_e3m2_mult": "pJ", "fp4_e2m1_mult": "pJ",
    "register_bit": "pJ", "mac_reference": "pJ", "mac_gated": "pJ", "mux2_bit": "pJ", "mux2_bit_area": "um2",
    "int32_mult_area": "um2", "int32_add_area": "um2", "register_bit_area": "um2", "int32_add_leakage": "mW",
    **{f"dram_{name}": "pJ/bit" for name in DRAM_TECHNOLOGIES},
}


def _finite_non_negative(value: float, what: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value}")
    return value


class Entry(StrictModel):
    value: float
    unit: str
    node_nm: float | None = Field(None, gt=0, description="node the value was measured at (none: off-chip)")
    source: str = Field(min_length=1)

    @field_validator("value")
    @classmethod
    def _check_value(cls, value: float) -> float:
        return _finite_non_negative(value, "value")


class ActionTable(StrictModel):
    name: str
    node_nm: float = Field(gt=0)
    vdd_v: float = Field(gt=0, allow_inf_nan=False)
    scaling: str | None = None
    sram: str
    entries: dict[str, Entry]

    @model_validator(mode="after")
    def _check_entries(self) -> ActionTable:
        reject_unknown_keys(self.entries, tuple(ENTRY_UNITS), "energy table entry")
        for name, entry in self.entries.items():
            if entry.unit != ENTRY_UNITS[name]:
                raise ValueError(f"entries.{name}: unit must be {ENTRY_UNITS[name]}, got {entry.unit}")
            off_chip = name.startswith("dram_")
            if off_chip and entry.node_nm is not None:
                raise ValueError(f"entries.{name}: DRAM energy is off-chip and takes no node_nm")
            if not off_chip and entry.node_nm is None:
                raise ValueError(f"entries.{name}: node_nm is required")
            if not off_chip and entry.node_nm != self.node_nm and self.scaling is None:
                raise ValueError(f"entries.{name}: measured at {entry.node_nm:g} nm, the table is at "
                                 f"{self.node_nm:g} nm and names no scaling rule")
        return self


class ScalingRule(StrictModel):
    # lax: YAML keys come as text ("130": the node in nm) and the coefficients as lists
    model_config = ConfigDict(strict=False)

    name: str
    energy_polynomial: dict[float, tuple[float, float, float]]
    area_vs_45nm: dict[float, float]

    @model_validator(mode="after")
    def _check_nodes(self) -> ScalingRule:
        if sorted(self.energy_polynomial) != sorted(self.area_vs_45nm) or len(self.area_vs_45nm) < 2:
            raise ValueError("energy_polynomial and area_vs_45nm must list the same nodes (at least two)")
        for node, factor in self.area_vs_45nm.items():
            if node <= 0 or not math.isfinite(factor) or factor <= 0:
                raise ValueError(f"area_vs_45nm: node {node} needs a positive, finite factor")
        return self

    def _interpolated(self, table: dict[float, float], node_nm: float) -> float:
        nodes = sorted(table)
        if not nodes[0] <= node_nm <= nodes[-1]:
            raise InputError(f"scaling rule {self.name} covers {nodes[0]:g} to {nodes[-1]:g} nm, not {node_nm:g} nm")
        at = bisect.bisect_left(nodes, node_nm)
        if nodes[at] == node_nm:
            return table[node_nm]
        low, high = nodes[at - 1], nodes[at]
        share = (node_nm - low) / (high - low)
        return table[low] + share * (table[high] - table[low])

    def energy_factor(self, node_nm: float, vdd_v: float) -> float:
        """F(node, Vdd) = a Vdd^2 + b Vdd + c, interpolated linearly in nm between listed nodes."""
        at_vdd = {node: a * vdd_v**2 + b * vdd_v + c for node, (a, b, c) in self.energy_polynomial.items()}
        factor = self._interpolated(at_vdd, node_nm)
        if factor <= 0:
            raise InputError(f"scaling rule {self.name}: no positive energy factor at {node_nm:g} nm, {vdd_v:g} V")
        return factor

    def energy_scale(self, from_nm: float, from_v: float, to_nm: float, to_v: float) -> float:
        return self.energy_factor(to_nm, to_v) / self.energy_factor(from_nm, from_v)

    def area_scale(self, from_nm: float, to_nm: float) -> float:
        return self._interpolated(self.area_vs_45nm, to_nm) / self._interpolated(self.area_vs_45nm, from_nm)


class SramRow(StrictModel):
    capacity_bytes: int = Field(gt=0)
    port_bits: int = Field(gt=0)
    cell: Literal["itrs-hp", "itrs-lstp"]
    read_pj: float
    write_pj: float
    leakage_mw: float
    area_mm2: float

    @field_validator("read_pj", "write_pj", "leakage_mw", "area_mm2")
    @classmethod
    def _check(cls, value: float) -> float:
        return _finite_non_negative(value, "a CACTI value")


class SramPoint(StrictModel):
    """One scratchpad at the SRAM table's node: per access of its port width, and the bank's totals."""

    read_pj: float
    write_pj: float
    leakage_mw: float
    area_mm2: float


class SramTable(StrictModel):
    name: str
    node_nm: float = Field(gt=0)
    vdd_v: dict[str, float]
    source: str
    rows: list[SramRow] = Field(min_length=2)

    @field_validator("vdd_v")
    @classmethod
    def _check_vdd(cls, table: dict[str, float]) -> dict[str, float]:
        reject_unknown_keys(table, SRAM_CELLS, "SRAM cell type")
        return table

    def smallest_bytes(self, port_bits: int, cell: str) -> int | None:
        """The smallest tabulated capacity at this port width and cell (None: the width is not tabulated)."""
        sizes = [row.capacity_bytes for row in self.rows if row.cell == cell and row.port_bits == port_bits]
        return min(sizes) if sizes else None

    def port_widths(self, cell: str) -> list[int]:
        return sorted({row.port_bits for row in self.rows if row.cell == cell})

    def lookup(self, capacity_bytes: int, port_bits: int, cell: str) -> SramPoint:
        """A scratchpad of ``capacity_bytes``: log-log interpolation between the tabulated capacities at
        ``port_bits`` (which must be tabulated); capacities outside the table are refused."""
        rows = sorted((row for row in self.rows if row.cell == cell and row.port_bits == port_bits),
                      key=lambda row: row.capacity_bytes)
        if not rows:
            widths = ", ".join(str(width) for width in self.port_widths(cell)) or "none"
            raise InputError(f"SRAM table {self.name} has no {cell} rows with {port_bits}-bit ports "
                             f"(tabulated: {widths})")
        sizes = [row.capacity_bytes for row in rows]
        if not sizes[0] <= capacity_bytes <= sizes[-1]:
            raise InputError(f"SRAM table {self.name} covers {sizes[0]:,} to {sizes[-1]:,} bytes, "
                             f"not a {capacity_bytes:,}-byte buffer")
        at = bisect.bisect_left(sizes, capacity_bytes)
        if sizes[at] == capacity_bytes:
            row = rows[at]
            return SramPoint(read_pj=row.read_pj, write_pj=row.write_pj, leakage_mw=row.leakage_mw,
                             area_mm2=row.area_mm2)
        low, high = rows[at - 1], rows[at]
        share = math.log(capacity_bytes / low.capacity_bytes) / math.log(high.capacity_bytes / low.capacity_bytes)

        def between(column: str) -> float:
            a, b = float(getattr(low, column)), float(getattr(high, column))
            if a <= 0 or b <= 0:
                return a + share * (b - a)
            return math.exp(math.log(a) + share * (math.log(b) - math.log(a)))

        return SramPoint(read_pj=between("read_pj"), write_pj=between("write_pj"),
                         leakage_mw=between("leakage_mw"), area_mm2=between("area_mm2"))


def table_path(name_or_path: str, what: str) -> Path:
    """The file of a table given by name (in configs/energy/) or as a YAML path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")):
        return Path(text)
    path = ENERGY_DIR / f"{text}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in ENERGY_DIR.glob("*.yaml"))
        raise InputError(f"unknown {what} {text!r}; known in {ENERGY_DIR}: {', '.join(known)}")
    return path


@functools.lru_cache(maxsize=32)
def load_action_table(name_or_path: str) -> ActionTable:
    path = table_path(name_or_path, "energy table")
    return validate(ActionTable, read_yaml_mapping(path), str(path))


@functools.lru_cache(maxsize=32)
def load_sram_table(name_or_path: str) -> SramTable:
    path = table_path(name_or_path, "SRAM table")
    return validate(SramTable, read_yaml_mapping(path), str(path))


@functools.lru_cache(maxsize=32)
def load_scaling_rule(name_or_path: str) -> ScalingRule:
    path = table_path(name_or_path, "scaling rule")
    return validate(ScalingRule, read_yaml_mapping(path), str(path))
