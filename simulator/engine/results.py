"""The results frame: one row per step, whole-run totals and the report category of each op."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from simulator.energy.accounting import energy_summary
from simulator.energy.action_costs import action_costs
from simulator.engine.capacity import Footprint
from simulator.engine.records import ACCESS_COLUMNS, ENERGY_COLUMNS, RESULT_COLUMNS, StepRecord
from simulator.spec.hardware import Hardware
from workloads.errors import InputError
from workloads.ops import INT64_MAX

_INTEGER_COLUMNS = tuple(index for index, field in enumerate(fields(StepRecord)) if field.type == "int")
# each column's array type (text stays Python objects, as pandas keeps it)
_DTYPES = tuple({"int": np.int64, "float": np.float64, "bool": np.bool_, "str": None}[str(field.type)]
                for field in fields(StepRecord))
TOTAL_COLUMNS = ("compute_cycles", "stall_cycles", "macs", "weight_bits", "index_bits", "scale_bits", "bias_bits",
                 "dram_bytes", *ACCESS_COLUMNS)


class Results(pd.DataFrame):
    """One row per op (trace ops and inserted SFU ops), with ``totals`` and ``notes`` attached.

    ``totals`` are computed from the rows present, so a filtered frame (``res[res.group == "ffn"]``)
    sums only its own rows (modify a frame's cells in place and its cached totals go stale: filter or
    copy instead); ``notes`` describe the whole run.
    """

    _metadata = ["hardware", "notes", "footprint", "overlap_links"]
    hardware: Hardware | None
    overlap_links: bool = False  # the system's collectives overlap the chip's work (System.overlap_collectives)
    notes: list[str]
    footprint: Footprint | None = None  # what the run held in DRAM at once (set by Simulator.run)

    @property
    def _constructor(self) -> type[Results]:
        return Results

    @property
    def totals(self) -> Totals:
        """Whole-frame totals, computed on first use from the rows present (not carried over by filtering)."""
        cached = self.__dict__.get("_totals")
        if cached is None:
            if self.hardware is None:
                raise InputError("these results carry no hardware: totals need the chip they ran on")
            cached = summarize_results(self, self.hardware, self.overlap_links)
            object.__setattr__(self, "_totals", cached)  # a plain attribute: pandas does not propagate it
        return cached


def frame(records: list[StepRecord]) -> Results:
    """The results frame of some step records, one row each."""
    rows = [record.row() for record in records]
    by_column = list(zip(*rows, strict=True))
    for index in _INTEGER_COLUMNS:  # results use 64-bit columns: refuse what would wrap around
        if by_column and max(by_column[index]) > INT64_MAX:
            row = next(row for row in rows if row[index] > INT64_MAX)
            raise InputError(f"op {row[0]}: {RESULT_COLUMNS[index]} = {row[index]} exceeds the 64-bit range; "
                             "reduce the workload or array size")
    if not rows:
        return Results(pd.DataFrame(columns=list(RESULT_COLUMNS)))
    return Results(pd.DataFrame({name: values if dtype is None else np.array(values, dtype=dtype)
                                 for name, values, dtype in zip(RESULT_COLUMNS, by_column, _DTYPES, strict=True)}))


def run_cycles(array_cycles: int, sfu_cycles: int, dram_bytes: int, hardware: Hardware, launch_cycles: int = 0,
               link_cycles: int = 0, overlap_links: bool = False) -> int:
    """Cycles of a whole run from its units' busy cycles and its DRAM traffic, plus its kernel launches
    (serial: the chip waits for each) and its collectives (serial: each joins the products around it; with
    ``overlap_links``, beside the chip's work: the longer of the two)."""
    total = max(array_cycles, sfu_cycles) if hardware.sfu.overlap_with_array else array_cycles + sfu_cycles
    dram_cycles = math.ceil(dram_bytes / hardware.memory.sustained_bytes_per_cycle) if dram_bytes else 0
    work = max(total, dram_cycles)
    return (max(work, link_cycles) if overlap_links else work + link_cycles) + launch_cycles


def record_totals(records: list[StepRecord], hardware: Hardware) -> tuple[int, int]:
    """(total cycles, DRAM bytes) of a run's records, as ``summarize_results`` counts them."""
    busy = {"array": 0, "sfu": 0, "link": 0}
    dram_bytes = launches = 0
    for record in records:
        busy[record.unit] += record.total_cycles
        dram_bytes += record.dram_bytes
        launches += record.launch_cycles
    return run_cycles(busy["array"], busy["sfu"], dram_bytes, hardware, launches, busy["link"]), dram_bytes


def dense_macs(frame: pd.DataFrame) -> int:
    """MACs of the products as written, zeros and all: batch x m x k x n of every array step."""
    on_array = frame["unit"] == "array"
    return int((frame["batch"][on_array] * frame["m"][on_array] * frame["k"][on_array] * frame["n"][on_array]).sum())


@dataclass(frozen=True)
class Totals(Mapping[str, Any]):
    """Whole-run totals (cycles, ms, bytes, bits, counts; ``energy`` is energy_summary's block, None where
    the hardware has no energy section). Fields read as attributes; ``totals["total_cycles"]`` also works,
    as the results' totals always have."""

    total_cycles: int
    latency_ms: float
    array_cycles: int
    sfu_cycles: int
    link_cycles: int  # collectives (a system of chips)
    dram_cycles: int
    launch_cycles: int
    compute_cycles: int
    stall_cycles: int
    macs: int
    weight_bits: int
    index_bits: int
    scale_bits: int
    bias_bits: int
    dram_bytes: int
    counts: dict[str, int]  # ACCESS_COLUMNS: the per-level action counts (also readable by name)
    utilization: float
    energy: dict[str, Any] | None

    def __getitem__(self, key: str) -> Any:
        if key in ACCESS_COLUMNS:
            return self.counts[key]
        if key not in _TOTAL_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter((*_TOTAL_KEYS, *ACCESS_COLUMNS))

    def __len__(self) -> int:
        return len(_TOTAL_KEYS) + len(ACCESS_COLUMNS)


_TOTAL_KEYS = tuple(field.name for field in fields(Totals) if field.name != "counts")


def summarize_results(frame: pd.DataFrame, hardware: Hardware, overlap_links: bool = False) -> Totals:
    """Whole-run totals. With SFU overlap the run takes the longer of the two units (ideal pipelining);
    either way never less than the time DRAM needs for the run's traffic; collectives and launches add."""
    unit, cycles = frame["unit"], frame["total_cycles"]  # columns picked by unit (not whole rows: a copy each)
    on_array = unit == "array"
    array_cycles = int(cycles[on_array].sum())
    sfu_cycles = int(cycles[unit == "sfu"].sum())
    link_cycles = int(cycles[unit == "link"].sum())
    dram_bytes = int(frame["dram_bytes"].sum())
    dram_cycles = math.ceil(dram_bytes / hardware.memory.sustained_bytes_per_cycle) if dram_bytes else 0
    launch_cycles = int(frame["launch_cycles"].sum())
    total = run_cycles(array_cycles, sfu_cycles, dram_bytes, hardware, launch_cycles, link_cycles, overlap_links)
    slots = total * hardware.pes
    useful = float((frame["macs"][on_array] / frame["macs_per_pe"][on_array]).sum()) if on_array.any() else 0.0
    sums = {column: int(frame[column].sum()) for column in TOTAL_COLUMNS}
    latency_ms = total / (hardware.array.clock_mhz * 1e3)
    energy = None
    if hardware.energy is not None and len(frame) and not frame["energy_pj"].isna().any():
        energy = energy_summary({column: float(frame[column].sum()) for column in ENERGY_COLUMNS},
                                sums["macs"], latency_ms, action_costs(hardware), dense_macs(frame))
    return Totals(
        total_cycles=total, latency_ms=latency_ms, array_cycles=array_cycles, sfu_cycles=sfu_cycles,
        link_cycles=link_cycles, dram_cycles=dram_cycles, launch_cycles=launch_cycles,
        compute_cycles=sums["compute_cycles"], stall_cycles=sums["stall_cycles"],
        macs=sums["macs"], weight_bits=sums["weight_bits"], index_bits=sums["index_bits"],
        scale_bits=sums["scale_bits"], bias_bits=sums["bias_bits"], dram_bytes=sums["dram_bytes"],
        counts={column: sums[column] for column in ACCESS_COLUMNS}, utilization=useful / slots if slots else 0.0,
        energy=energy)


def imbalance_notes(frame: Results) -> list[str]:
    """Unstructured masks: compute against ideal density scaling (dense cycles x kept fraction)."""
    masked = frame[frame["sparsity"] == "unstructured"]
    if masked.empty:
        return []
    dense_macs = (masked["batch"] * masked["m"] * masked["k"] * masked["n"]).sum()
    density = masked["macs"].sum() / dense_macs
    ideal = masked["dense_compute_cycles"].sum() * density
    actual = masked["compute_cycles"].sum()
    if ideal == 0:
        return [f"unstructured masks (density {density:.3g}): no weight is kept, so the masked ops take "
                f"{actual:,} compute cycles"]
    return [f"unstructured masks (density {density:.3f}): {actual:,} compute cycles vs {ideal:,.0f} at ideal density "
            f"scaling ({100 * (actual / ideal - 1):.3g}% lost to lanes waiting for the slowest)"]
