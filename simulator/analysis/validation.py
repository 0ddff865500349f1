"""Predicted against measured silicon (pure): every point of a measured-silicon file simulated on its
chip's preset, the ratio predicted / measured, and the envelope per regime (docs/validation.md).

Each point runs as it was measured: one call, alone, from DRAM, in its precision (bf16 unless it says), so
its latency is the call's cycles over the preset's clock; power is the die's (DRAM's energy is outside
it), busy on the point's product or idle (static power); efficiency is operations per joule of the die.
A point that sums others (a layer) sums their predictions. ``fitted`` is true only for calibration points
of a preset that was fitted to them; nothing else was fitted to anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from simulator.energy.accounting import static_mw
from simulator.energy.action_costs import action_costs
from simulator.engine.timing import stationary_load_cycles
from simulator.spec.hardware import Hardware
from simulator.spec.run_config import policy_from_dict
from simulator.spec.silicon import COUNTERS, Bmm, Gemm, Idle, Network, Point, RowOp, SiliconData, Sum
from workloads.builder import OpBuilder
from workloads.errors import InputError
from workloads.ops import Trace

if TYPE_CHECKING:
    from simulator.engine import Results


@dataclass(frozen=True)
class Compared:
    """One measured point and accelsim's prediction of it."""

    key: str
    preset: str
    workload: str
    metric: str
    unit: str
    measured: float
    predicted: float
    regime: str
    calibration: bool
    fitted: bool
    source: str

    @property
    def ratio(self) -> float:
        return self.predicted / self.measured


@dataclass(frozen=True)
class Envelope:
    """A regime's accuracy: its points, the geometric mean of predicted / measured, and the worst
    |ratio - 1|."""

    regime: str
    n: int
    geomean_ratio: float
    worst_error: float


def compare(data: SiliconData, hardware: Hardware) -> list[Compared]:
    """Every point of ``data`` predicted on ``hardware`` (the preset the file names, or another)."""
    predicted: dict[str, float] = {}
    for point in sorted(data.points, key=lambda p: isinstance(p.workload, Sum)):  # sums after their parts
        predicted[point.key] = _predict(point, hardware, predicted)
    return [Compared(p.key, hardware.name, p.workload.describe(), p.metric, p.unit, p.measured, predicted[p.key],
                     p.regime, p.calibration, p.calibration and bool(hardware.fitted), data.sources[p.source].title)
            for p in data.points]


def _predict(point: Point, hardware: Hardware, known: dict[str, float]) -> float:
    """The point's metric in its unit: latency in ms; the die's power in W (its energy less DRAM's over the
    time, or its static power when idle); efficiency in TOPS/W (2 x MACs per pJ of the die); throughput in
    TOPS (2 x MACs over the time)."""
    from simulator.engine import simulate

    workload = point.workload
    if isinstance(workload, Sum):
        return sum(known[part] for part in workload.of)
    if point.metric in ("power", "efficiency") and hardware.energy is None:
        raise InputError(f"{point.key}: hardware {hardware.name} has no energy section to predict {point.metric}")
    if isinstance(workload, Idle):
        return static_mw(action_costs(hardware)) / 1e3
    precision = workload.precision if isinstance(workload, Gemm | Network) else "bf16"
    policy = policy_from_dict({"name": precision, "hardware": hardware.name, "precision": {"default": precision}})
    results = simulate(_trace(workload), hardware, policy)
    totals = results.totals
    if point.metric in COUNTERS:
        return 100 * counter_shares(results, hardware)[point.metric]
    if point.metric == "inference_rate":
        assert isinstance(workload, Network)  # checked when the file was read
        return workload.batch / (float(totals.latency_ms) * 1e-3)
    if point.metric == "throughput":
        return 2 * int(totals.macs) / (float(totals.latency_ms) * 1e-3) / 1e12
    if point.metric == "latency":
        return (workload.calls if isinstance(workload, Gemm) else 1) * float(totals.latency_ms)
    assert totals.energy is not None  # the hardware has an energy section (checked above)
    die_pj = float(totals.energy["total_pj"]) - float(totals.energy["by_component"]["dram"])
    if point.metric == "power":
        return die_pj * 1e-9 / float(totals.latency_ms)  # pJ per ms = 1e-9 W
    return 2 * int(totals.macs) / die_pj  # operations per pJ = tera-operations per joule


def counter_shares(results: Results, hardware: Hardware) -> dict[str, float]:
    """The shares of a run's cycles that TPU v1's performance counters report, together 1 (how the cycles
    divide: docs/validation.md, "What is measured"). Defined for one weight-stationary array, as that chip
    has."""
    if hardware.arrays != 1 or hardware.array.dataflow != "ws":
        raise InputError(f"{hardware.name}: the performance counters are defined for one weight-stationary array")
    matrix, vector = results[results.unit == "array"], results[results.unit == "sfu"]
    load = stationary_load_cycles(hardware.array.rows)  # one tile's shift into the array
    cycles = dict.fromkeys(COUNTERS, 0)
    for folds, rows, compute, stall, transfer in zip(matrix.folds, matrix.m, matrix.compute_cycles,
                                                     matrix.stall_cycles, matrix.transfer_cycles, strict=True):
        active = int(folds) * int(rows)  # ws streams a product's m rows through each of its folds
        busy = int(compute) + int(stall)
        waits = transfer > compute  # its DRAM transfers outlast its compute: every tile arrives late
        shift = min(int(folds) * load, busy - active) if waits else int(compute) - active
        cycles["array_active"] += active
        cycles["weight_shift"] += shift
        cycles["weight_stall"] += busy - active - shift
    cycles["non_matrix"] = int(vector.total_cycles.sum())
    total = sum(cycles.values())
    return {name: count / total for name, count in cycles.items()}


def _trace(workload: Gemm | Bmm | RowOp | Network) -> Trace:
    builder = OpBuilder()
    if isinstance(workload, Network):
        _network(builder, workload)
    elif isinstance(workload, Gemm):
        builder.input("x", workload.m * workload.k)
        builder.gemm("op", 0, "ffn1", "ffn", workload.m, workload.k, workload.n, bias=False)
    elif isinstance(workload, Bmm):
        builder.input("a", workload.batch * workload.m * workload.k)
        builder.input("b", workload.batch * workload.k * workload.n)
        builder.bmm("op", 0, "bmm_qk", "attention", workload.batch, workload.m, workload.k, workload.n,
                    reads=("a", "b"))
    else:
        builder.input("x", workload.rows * workload.width)
        if workload.op == "layernorm":
            builder.layernorm("op", 0, "ffn", workload.rows, workload.width)
        else:
            builder.vector("op", 0, workload.op, "attention", workload.rows * workload.width)
    return builder.build_trace("silicon", {"batch": 1})


def _network(builder: OpBuilder, network: Network) -> None:
    """An application's layers in order (see :class:`~simulator.spec.silicon.Network`)."""
    rows, width = network.batch, network.width
    builder.input("x", rows * width)
    for layer in range(max(network.fc_layers, network.vector_layers)):
        if layer < network.fc_layers:
            builder.gemm(f"fc{layer}", layer, "ffn1", "ffn", rows, width, width, bias=False)
        if layer < network.vector_layers:
            builder.vector(f"act{layer}", layer, network.vector_op, "ffn", rows * width)


def envelopes(compared: Sequence[Compared]) -> list[Envelope]:
    """Per regime, in the order regimes first appear."""
    regimes: dict[str, list[float]] = {}
    for point in compared:
        regimes.setdefault(point.regime, []).append(point.ratio)
    return [Envelope(regime, len(ratios), math.exp(sum(math.log(r) for r in ratios) / len(ratios)),
                     max(abs(r - 1) for r in ratios)) for regime, ratios in regimes.items()]


PHASE_REGIMES = {"prefill": ("prefill_layer", "prefill_matrix", "prefill_vector"),
                 "decode": ("decode_layer", "decode_matrix", "decode_vector")}


def accuracy_line(hardware: Hardware, measured: Sequence[SiliconData], phases: Sequence[str]) -> str:
    """One line for a run's summary: whether ``hardware`` is validated on silicon, and to what error for the
    run's ``phases`` (prefill, decode): the layer's ratio and the worst op per kind."""
    from simulator.spec.hardware import load_hardware

    data = [d for d in measured if d.preset == hardware.name]
    if not data:
        return f"not validated on silicon: no measured chip for {hardware.name} (accelsim validate)"
    if hardware != load_hardware(hardware.name):
        return (f"not validated on silicon: a variant of {hardware.name}, which is validated as shipped "
                "(accelsim validate)")
    compared = [point for d in data for point in compare(d, hardware)]
    by_regime = {e.regime: e for e in envelopes(compared)}
    fitted = {p.regime for p in compared if p.fitted} - {p.regime for p in compared if not p.fitted}
    parts = []
    for phase in phases:
        layer, matrix, vector = (by_regime.get(regime) for regime in PHASE_REGIMES[phase])
        found = [f"{phase} layer {layer.geomean_ratio:.2f}x measured"] if layer else []
        found += [f"{kind} ops " + ("fitted" if e.regime in fitted else f"within {100 * e.worst_error:.0f}%")
                  for kind, e in (("matrix", matrix), ("vector", vector)) if e]
        parts += [", ".join(found)] if found else []
    parts += [f"die {regime} {by_regime[regime].geomean_ratio:.2f}x measured" for regime in ("power", "efficiency")
              if regime in by_regime]
    if not parts:
        parts = [f"no measured point for {' or '.join(phases)}"]
    chips = " and ".join(d.chip for d in data)
    return f"validated on silicon against {chips}: {'; '.join(parts)} (accelsim validate)"
