"""Calibrate tpu_v3_core against its calibration subset of measured TPU v3 silicon (reference/silicon/tpu_v3.yaml).

Only the points marked ``calibration: true`` are used (the 20 GEMMs and the prefill softmax, LayerNorm and
GELU); every other point stays a prediction. In order:

1. ``dispatch.kernel_us``: the mean of the per-call costs the artifact measured apart for the 20 GEMMs
   (a measured value, averaged), rounded to 0.1 us.
2. ``memory.dram_efficiency``: with that per-call cost, the sustained fraction of HBM's peak that
   minimises the squared log ratios (predicted / measured) over the 20 GEMMs: a golden-section search on
   (0.05, 1], rounded to 0.01.
3. ``sfu.cycles_per_element`` of softmax, layernorm and gelu: each one's measured prefill op, solved by
   bisection for the per-element cost that predicts it exactly, rounded to 0.1 cycle. These stand in for
   a vector-unit model with its own working format and passes (not modelled yet): they are the TPU's
   cost per element as its compiler runs these ops, fp32 passes through HBM and all.

Run: python calibration/fit_tpu_v3_core.py   (prints the fitted values; the preset must hold them)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.fitted import report
from simulator.analysis.validation import compare
from simulator.spec.hardware import Hardware, load_hardware
from simulator.spec.silicon import SILICON_DIR, Point, SiliconData, load_silicon

DATA = SILICON_DIR / "tpu_v3.yaml"
VECTOR_OPS = {"v3.gpt3.prefill.softmax": "softmax", "v3.gpt3.prefill.layernorm_mha": "layernorm",
              "v3.gpt3.prefill.gelu": "gelu"}


def with_fields(hardware: Hardware, **sections: dict[str, Any]) -> Hardware:
    data = hardware.model_dump()
    for section, fields in sections.items():
        data[section] = {**data[section], **fields}
    return Hardware.model_validate(data)


def only(data: SiliconData, points: list[Point]) -> SiliconData:
    return data.model_copy(update={"points": points})


def log_error(data: SiliconData, hardware: Hardware) -> float:
    return sum(math.log(p.ratio) ** 2 for p in compare(data, hardware))


def fit(data: SiliconData, base: Hardware) -> dict[str, Any]:
    """The fitted values, from the calibration points of ``data`` on ``base`` (the preset without them)."""
    gemms = [p for p in data.points if p.calibration and p.regime == "gemm"]
    calls = [p.per_call_ms for p in gemms if p.per_call_ms is not None]
    kernel_us = round(1e3 * sum(calls) / len(calls), 1)
    hardware = with_fields(base, dispatch={"kernel_us": kernel_us})
    low, high = 0.05, 1.0
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(30):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        errors = [log_error(only(data, gemms), with_fields(hardware, memory={"dram_efficiency": e})) for e in (a, b)]
        low, high = (low, b) if errors[0] <= errors[1] else (a, high)
    efficiency = round((low + high) / 2, 2)
    hardware = with_fields(hardware, memory={"dram_efficiency": efficiency})
    costs: dict[str, float] = {}
    points = {p.key: p for p in data.points}
    for key, op in VECTOR_OPS.items():
        point = points[key]
        low, high = 0.01, 10_000.0
        for _ in range(60):
            middle = math.sqrt(low * high)
            trial = with_fields(hardware, sfu={"cycles_per_element": {**hardware.sfu.cycles_per_element, op: middle}})
            predicted = compare(only(data, [point]), trial)[0].predicted
            low, high = (middle, high) if predicted < point.measured else (low, middle)
        costs[op] = round(math.sqrt(low * high), 1)
    return {"dispatch.kernel_us": kernel_us, "memory.dram_efficiency": efficiency,
            **{f"sfu.cycles_per_element.{op}": cost for op, cost in costs.items()}}


def unfitted(preset: Hardware) -> Hardware:
    """The preset with its fitted fields back at their unfitted values (no launch cost, HBM at its peak,
    the vector costs it had before fitting: tpu_v5e_like's)."""
    reference = load_hardware("tpu_v5e_like").sfu.cycles_per_element
    costs = {**preset.sfu.cycles_per_element, **{op: reference[op] for op in VECTOR_OPS.values()}}
    return with_fields(preset, dispatch={"kernel_us": 0.0}, memory={"dram_efficiency": 1.0},
                       sfu={"cycles_per_element": costs})


def preset_values(preset: Hardware) -> dict[str, Any]:
    return {"dispatch.kernel_us": preset.dispatch.kernel_us, "memory.dram_efficiency": preset.memory.dram_efficiency,
            **{f"sfu.cycles_per_element.{op}": preset.sfu.cycles_per_element[op] for op in VECTOR_OPS.values()}}


def main() -> None:
    preset = load_hardware("tpu_v3_core")
    report("tpu_v3_core", fit(load_silicon(DATA), unfitted(preset)), preset_values(preset))

if __name__ == "__main__":
    main()
