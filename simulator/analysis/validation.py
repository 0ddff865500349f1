"""Predicted against measured silicon (pure): every point of a measured-silicon file simulated on its
chip's preset, the ratio predicted / measured, and the envelope per regime (docs/validation.md).

Each point runs as it was measured: one call, alone, from DRAM, in bf16 (the chips of the reference data
compute in bf16), so its latency is the call's cycles over the preset's clock. A point that sums others
(a layer) sums their predictions. ``fitted`` is true only for calibration points of a preset that was
fitted to them; nothing else was fitted to anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from simulator.spec.hardware import Hardware
from simulator.spec.run_config import Policy, policy_from_dict
from simulator.spec.silicon import Bmm, Gemm, Point, RowOp, SiliconData, Sum
from workloads.ops import OpBuilder, Trace


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
    policy = policy_from_dict({"name": "bf16", "hardware": hardware.name, "precision": {"default": "bf16"}})
    predicted: dict[str, float] = {}
    for point in sorted(data.points, key=lambda p: isinstance(p.workload, Sum)):  # sums after their parts
        predicted[point.key] = _predict(point, hardware, policy, predicted)
    return [Compared(p.key, hardware.name, p.workload.describe(), p.metric, p.unit, p.measured, predicted[p.key],
                     p.regime, p.calibration, False, data.sources[p.source].title) for p in data.points]


def _predict(point: Point, hardware: Hardware, policy: Policy, known: dict[str, float]) -> float:
    """The point's latency in ms."""
    from simulator.engine import simulate

    workload = point.workload
    if isinstance(workload, Sum):
        return sum(known[part] for part in workload.of)
    results = simulate(_trace(workload), hardware, policy)
    calls = workload.calls if isinstance(workload, Gemm) else 1
    return calls * int(results["total_cycles"].sum()) / (hardware.array.clock_mhz * 1e3)


def _trace(workload: Gemm | Bmm | RowOp) -> Trace:
    builder = OpBuilder()
    if isinstance(workload, Gemm):
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


def envelopes(compared: Sequence[Compared]) -> list[Envelope]:
    """Per regime, in the order regimes first appear."""
    regimes: dict[str, list[float]] = {}
    for point in compared:
        regimes.setdefault(point.regime, []).append(point.ratio)
    return [Envelope(regime, len(ratios), math.exp(sum(math.log(r) for r in ratios) / len(ratios)),
                     max(abs(r - 1) for r in ratios)) for regime, ratios in regimes.items()]
