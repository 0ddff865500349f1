"""Measured silicon (``reference/silicon/*.yaml``), read and checked (I/O at the edge of the core).

A file names one chip, the accelsim preset that models it, its sources (title, file, URL, where the
shapes come from, and the measurement's quality) and its points: each a workload (the shape it was
measured on), a metric with its unit, the measured value, a regime (the envelope groups points by it)
and whether it belongs to the calibration subset a preset may be fitted to. Measurements accelsim does
not simulate are listed apart with the reason. A point without a known source, a unit, a shape or a
positive value is refused naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from simulator.spec.config_io import StrictModel, read_yaml_mapping, validate
from simulator.spec.shipped import REFERENCE_DIR

SILICON_DIR = REFERENCE_DIR / "silicon"
# the share of an app's matrix-unit cycles (TPU v1's performance counters, Table 3 rows 1, 4, 5 and 6)
COUNTERS = ("array_active", "weight_shift", "weight_stall", "non_matrix")
UNITS = {"latency": "ms", "power": "W", "efficiency": "TOPS/W", "throughput": "TOPS", "inference_rate": "inferences/s",
         **dict.fromkeys(COUNTERS, "%")}  # metric -> its points' unit
METRIC = Literal["latency", "power", "efficiency", "throughput", "inference_rate", "array_active", "weight_shift",
                 "weight_stall", "non_matrix"]


class Source(StrictModel):
    title: str = Field(min_length=1)
    file: str = Field(min_length=1)
    url: str = Field(pattern=r"^https://")
    shapes: str = Field(min_length=1, description="where the measured shapes come from, or what was assumed")
    quality: str = Field(min_length=1, description="exact shapes and one core, or assumed shapes")


class Gemm(StrictModel):
    """``calls`` separate products of (m x k) @ (k x n), each a call of its own (e.g. Q, K and V), in
    ``precision`` (weights and activations)."""

    op: Literal["gemm"]
    m: int = Field(gt=0)
    k: int = Field(gt=0)
    n: int = Field(gt=0)
    calls: int = Field(1, gt=0)
    precision: str = "bf16"

    def describe(self) -> str:
        text = f"{self.calls} x " * (self.calls > 1) + f"gemm {self.m}x{self.k}x{self.n}"
        return text if self.precision == "bf16" else f"{text} {self.precision}"


class Idle(StrictModel):
    """The chip powered and doing nothing."""

    op: Literal["idle"]

    def describe(self) -> str:
        return "idle"


class Bmm(StrictModel):
    op: Literal["bmm"]
    batch: int = Field(gt=0)
    m: int = Field(gt=0)
    k: int = Field(gt=0)
    n: int = Field(gt=0)

    def describe(self) -> str:
        return f"bmm {self.batch} x {self.m}x{self.k}x{self.n}"


class RowOp(StrictModel):
    """A vector op over ``rows`` rows of ``width`` elements (softmax and layernorm reduce along a row)."""

    op: Literal["softmax", "layernorm", "gelu"]
    rows: int = Field(gt=0)
    width: int = Field(gt=0)

    def describe(self) -> str:
        return f"{self.op} {self.rows}x{self.width}"


class Network(StrictModel):
    """A whole application on ``batch`` rows: ``fc_layers`` fully connected layers of ``width`` x ``width``
    weights, each reading the one before, and ``vector_layers`` element-wise layers of ``vector_op`` over
    batch x width elements, interleaved (an FC layer, then a vector layer, while both last), in
    ``precision``. Its shapes are what a source's layer counts, weights and batch allow (equal square
    layers); the source says so."""

    op: Literal["network"]
    batch: int = Field(gt=0)
    width: int = Field(gt=0)
    fc_layers: int = Field(gt=0)
    vector_layers: int = Field(0, ge=0)
    vector_op: Literal["relu", "tanh"] = "tanh"
    precision: str = "int8"

    def describe(self) -> str:
        vector = f" + {self.vector_layers} {self.vector_op}" if self.vector_layers else ""
        return f"{self.fc_layers} fc {self.width}^2{vector}, batch {self.batch} {self.precision}"


class Sum(StrictModel):
    """The sum of other points of the file (a layer of measured ops)."""

    op: Literal["sum"]
    of: list[str] = Field(min_length=1)

    def describe(self) -> str:
        return f"sum of {len(self.of)} ops"


Workload = Annotated[Gemm | Bmm | RowOp | Network | Sum | Idle, Field(discriminator="op")]
# What each metric is measured on: latency on any op or a sum of them; power on a busy product or the idle chip
# (the die's power: DRAM's is outside it); efficiency (operations per joule of the die) on a product;
# throughput (operations per second, 2 per multiply-accumulate), inferences per second (a batch's rows over its
# time) and the counters' shares of cycles on an application.
METRIC_WORKLOADS = {"latency": ("gemm", "bmm", "softmax", "layernorm", "gelu", "sum"), "power": ("gemm", "idle"),
                    "efficiency": ("gemm",), "throughput": ("network",), "inference_rate": ("network",),
                    **dict.fromkeys(COUNTERS, ("network",))}


class Point(StrictModel):
    key: str = Field(min_length=1)
    source: str
    workload: Workload
    metric: METRIC
    unit: str
    measured: float = Field(gt=0)
    regime: str = Field(min_length=1)
    calibration: bool
    per_call_ms: float | None = Field(None, gt=0, description="the per-call cost measured apart, where it was")

    @model_validator(mode="after")
    def _unit(self) -> Point:
        if self.unit != UNITS[self.metric]:
            raise ValueError(f"{self.key}: {self.metric} is given in {UNITS[self.metric]}, not {self.unit!r}")
        if self.workload.op not in METRIC_WORKLOADS[self.metric]:
            raise ValueError(f"{self.key}: {self.metric} is measured on {', '.join(METRIC_WORKLOADS[self.metric])}, "
                             f"not {self.workload.op}")
        return self


class NotSimulated(StrictModel):
    key: str = Field(min_length=1)
    source: str
    metric: METRIC
    unit: str
    measured: float = Field(gt=0)
    reason: str = Field(min_length=1)


class SiliconData(StrictModel):
    chip: str = Field(min_length=1)
    preset: str = Field(min_length=1, description="the accelsim hardware preset that models the chip")
    sources: dict[str, Source] = Field(min_length=1)
    points: list[Point] = Field(min_length=1)
    not_simulated: list[NotSimulated] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> SiliconData:
        keys = [point.key for point in self.points]
        if len(set(keys)) != len(keys):
            raise ValueError(f"a point key is given twice: {sorted(k for k in set(keys) if keys.count(k) > 1)[0]}")
        cited = [(point.key, point.source) for point in self.points]
        for key, source in [*cited, *((item.key, item.source) for item in self.not_simulated)]:
            if source not in self.sources:
                raise ValueError(f"{key}: unknown source {source!r} (sources: {', '.join(self.sources)})")
        for point in self.points:
            if isinstance(point.workload, Sum):
                for part in point.workload.of:
                    if part not in keys or part == point.key:
                        raise ValueError(f"{point.key}: sums {part!r}, which is not another point of the file")
        return self


def load_silicon(path: Path) -> SiliconData:
    """One measured-silicon file, checked (an InputError naming the file and the field otherwise)."""
    return validate(SiliconData, read_yaml_mapping(path), str(path))


def silicon_files() -> list[Path]:
    return sorted(SILICON_DIR.glob("*.yaml"))


def measured_silicon() -> list[SiliconData]:
    """Every shipped measured-silicon file."""
    return [load_silicon(path) for path in silicon_files()]
