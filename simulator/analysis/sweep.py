"""Design-space sweeps: hardware axes x run configs x models, on any concurrent.futures.Executor.

```yaml
name: pe_array
hardware: rapid_like                     # base preset (name or path)
axes:
  product: {array.rows: [16, 32], array.cols: [64, 128]}   # every combination
  zip: {memory.dram_bytes_per_cycle: [64, 128], sfu.lanes: [32, 64]}   # in lock-step
configs: [int8, int8_sp]                 # names under configs/ or paths (relative to this file)
models: [bert-base, {name: vit-base, image_size: 224}]
# generation: {name: llama-2-7b, tokens: 512, new_tokens: 128} (prompt, then new tokens), and workload
# axes next to hardware ones: product: {model.batch: [1, 8, 32], model.new_tokens: [64, 256]}
# a system preset as hardware splits the models over its chips: parallel: {tp: 8} (else each config's
# parallel:, else one chip per degree), and axes parallel.tp / .ep / .pp / .microbatches and chips
# serve: {num_requests: 200, rate: 2} serves a request stream at every point instead (docs/serving.md), and
# the axis rate sets its arrival rate: throughput-latency curves per config
include_frontend: true                   # the default: the whole model, as everywhere
include_head: true
trace: false                             # true: the real transformers models, traced (hf extra)
timing: default
```

Design points are the product of the ``product`` axes times the ``zip`` tuples; every design point
runs every config on every model. An axis ``model.<knob>`` (a knob of workloads/knobs.py that a sweep may
vary, or new_tokens) sets that knob of every model entry at the point. A model entry with
``new_tokens`` is a generation (its ``tokens`` the prompt): its row gives the end-to-end time as
``total_cycles``/``latency_ms`` and adds ``ttft_ms``, ``tpot_ms``, ``tokens_per_s`` and
``tokens_per_s_per_chip``. With a system preset as ``hardware`` every point runs on its chips as the parallel
plan says: the axis ``chips`` sets the system's chip count (a torus the squarest shape), the axes
``parallel.<degree>`` the plan's degrees (which must use every chip); energy is the system's. With
``serve:`` every (point, config, model) serves a generated request stream (``accelsim serve``'s options by
name) and its row gives the run's duration as ``latency_ms``, throughput (``requests_per_s``,
``tokens_per_s``), goodput under its ``slo``, TTFT/TPOT/E2E percentiles and energy per token; the axis
``rate`` sets the arrival rate (requests/s). A point is
identified by a stable id (a hash of its axis values, config and model), so a sweep resumes by
skipping finished ids. This module is the pure plan (expanding points; what an axis may name and what
a point's hardware, system, plan and configs are is :mod:`simulator.analysis.sweep_axes`; evaluating
points is :mod:`simulator.analysis.sweep_points`); :mod:`simulator.cli.sweep_run` is the edge
(executors, part files, progress, the plot).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from simulator.analysis.sweep_axes import check_axis_path, check_axis_values, config_at
from simulator.serving.defaults import DEFAULT_OUTPUTS, DEFAULT_PROMPTS
from simulator.spec.checkpoint import CHECKPOINT, checkpoint_run
from simulator.spec.config_io import StrictModel, read_yaml_mapping, validate
from simulator.spec.run_config import (
    RunConfig,
    load_baseline,
    load_references,
    load_run_config,
    resolve_run_config,
)
from simulator.spec.system import ParallelPlan, load_target
from simulator.spec.workload_knobs import WorkloadKnobs
from workloads.errors import InputError
from workloads.knobs import KNOB_NAMES, KNOBS
from workloads.ops import MAX_SIZE

# The model and each resolved workload knob get a column of their own (empty where a knob does not
# apply); stored bits are split into weight values, metadata (N:M indices, bitmaps, outlier indices),
# scale factors and biases, with their sum.
MODEL_COLUMNS = ("model", *KNOB_NAMES, "new_tokens")
GENERATION_COLUMNS = ("ttft_ms", "tpot_ms", "tokens_per_s", "tokens_per_s_per_chip")
PARALLEL_COLUMNS = ("chips", *ParallelPlan.model_fields)  # the point's system size and parallel plan
# A serving point's (empty elsewhere): its arrival rate, throughput, goodput and latency percentiles.
SERVING_COLUMNS = ("rate", "requests_per_s", "goodput_requests_per_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms",
                   "tpot_p99_ms", "e2e_p99_ms", "completed", "rejected")
# Energy and area (empty when the hardware has no energy section): the run's total energy, per generated
# token for a generation or a decode step (empty for a prefill), TOPS/W (2 ops per useful MAC), effective
# TOPS/W (2 ops per MAC of the dense products), and the chip's area.
SWEEP_ENERGY_COLUMNS = ("energy_uj", "energy_per_token_uj", "tops_per_w", "effective_tops_per_w", "area_mm2")
RESULT_COLUMNS = ("point_id", "point", "config", *MODEL_COLUMNS, *PARALLEL_COLUMNS, "total_cycles", "latency_ms",
                  *GENERATION_COLUMNS, *SERVING_COLUMNS, "collective_share", "utilization", "speedup_vs_baseline",
                  "stored_bits",
                  "value_bits", "index_bits", "scale_bits", "bias_bits", "dram_bytes", *SWEEP_ENERGY_COLUMNS, "error")
INTEGER_COLUMNS = (*(knob.name for knob in KNOBS if knob.kind is int), "new_tokens", *PARALLEL_COLUMNS, "completed",
                   "rejected", "total_cycles",
                   "stored_bits", "value_bits", "index_bits", "scale_bits", "bias_bits", "dram_bytes")


class ModelEntry(WorkloadKnobs):
    name: str
    new_tokens: int | None = Field(None, gt=0, le=MAX_SIZE, description="a generation: new tokens after the prompt")

    def at(self, axis_values: dict[str, Any]) -> ModelEntry:
        """This entry with the ``model.<knob>`` axes of a design point applied."""
        knobs = {path.removeprefix("model."): value for path, value in axis_values.items() if path.startswith("model.")}
        return validate(ModelEntry, {**self.model_dump(), **knobs}, f"{self.name} at {axis_values}") if knobs else self


class ServeEntry(StrictModel):
    """A serving sweep's request stream and scheduler (``accelsim serve``'s options, by name)."""

    num_requests: int = Field(gt=0, le=MAX_SIZE)
    rate: float | None = Field(None, gt=0, allow_inf_nan=False, description="requests/s (the rate axis sets it; "
                                                                             "none: all at time 0)")
    prompt_tokens: str = DEFAULT_PROMPTS
    output_tokens: str = DEFAULT_OUTPUTS
    seed: int = Field(0, ge=0)
    samples: int = Field(1, gt=0, le=4096, description="sequences sampled per request (parallel sampling)")
    beams: int = Field(1, gt=0, le=4096, description="beams searched per request (one returned)")
    scheduler: Literal["static", "continuous", "chunked"] = "continuous"
    max_batch: int = Field(256, gt=0, le=MAX_SIZE)
    max_tokens: int | None = Field(None, gt=0, le=MAX_SIZE)
    kv_block_size: int = Field(16, gt=0, le=MAX_SIZE)
    preemption: Literal["recompute", "swap"] = "recompute"
    swap_space: float | None = Field(None, gt=0, allow_inf_nan=False,
                                     description="GiB of host memory for swapped KV blocks (preemption: swap)")
    slo: str | None = Field(None, description="ttft=MS,tpot=MS: goodput counts the requests meeting both")

    @model_validator(mode="after")
    def _check(self) -> ServeEntry:
        from simulator.serving.defaults import swap_space_bytes
        from simulator.serving.metrics import parse_slo
        from simulator.serving.requests import parse_lengths

        if self.samples > 1 and self.beams > 1:
            raise ValueError("a request either samples sequences or searches beams, not both")
        try:
            parse_lengths(self.prompt_tokens, "prompt_tokens"), parse_lengths(self.output_tokens, "output_tokens")
            swap_space_bytes(self.preemption, self.swap_space)
            if self.slo is not None:
                parse_slo(self.slo)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return self


class Axes(StrictModel):
    product: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Axes:
        for kind, table in (("product", self.product), ("zip", self.zip)):
            for path, values in table.items():
                if not values:
                    raise ValueError(f"{kind}.{path}: needs at least one value")
        lengths = {len(values) for values in self.zip.values()}
        if len(lengths) > 1:
            raise ValueError(f"zip axes must have equal lengths, got {sorted(lengths)}")
        shared = set(self.product) & set(self.zip)
        if shared:
            raise ValueError(f"axis {sorted(shared)[0]!r} is in both product and zip")
        return self

    @property
    def paths(self) -> list[str]:
        return [*self.product, *self.zip]


class SweepSpec(StrictModel):
    name: str
    hardware: str
    axes: Axes = Field(default_factory=Axes)
    configs: list[str] = Field(min_length=1)
    models: list[ModelEntry] = Field(min_length=1)  # a bare name is an entry with the defaults
    include_frontend: bool = True  # one default everywhere: the whole model
    include_head: bool = True
    trace: bool = False  # simulate the transformers models traced on the meta device (hf extra)
    timing: Literal["default", "scalesim"] = "default"
    parallel: ParallelPlan | None = None  # a system's split (else each config's parallel:); axes override it
    serve: ServeEntry | None = None  # serve a request stream at every point (the rate axis sets its rate)

    @field_validator("models", mode="before")
    @classmethod
    def _entries(cls, models: Any) -> Any:
        return [{"name": m} if isinstance(m, str) else m for m in models] if isinstance(models, list) else models


def design_points(axes: Axes) -> list[dict[str, Any]]:
    product = [dict(zip(axes.product, values, strict=True)) for values in itertools.product(*axes.product.values())]
    zipped = [dict(zip(axes.zip, values, strict=True)) for values in zip(*axes.zip.values(), strict=True)] or [{}]
    return [{**p, **z} for p in product for z in zipped]


def point_id(axis_values: dict[str, Any], config: str, model: ModelEntry) -> str:
    canonical = json.dumps({"axes": axis_values, "config": config, "model": model.model_dump()}, sort_keys=True)
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Point:
    index: int
    point_id: str
    axes: dict[str, Any]
    config: str  # resolved path of the run config
    model: ModelEntry


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs, as plain picklable data (it may run on another machine)."""

    spec: SweepSpec
    base_hardware: dict[str, Any]
    base_system: dict[str, Any] | None  # the system preset the sweep runs on, else None (one chip)
    configs: dict[str, dict[str, Any]]  # config path -> {"config": RunConfig dump, "baseline": RunConfig dump | None}
    points: tuple[Point, ...]


def load_sweep(path: str | Path) -> tuple[SweepSpec, Plan]:
    path = Path(path)
    spec = validate(SweepSpec, read_yaml_mapping(path), str(path))
    for axis, values in (*spec.axes.product.items(), *spec.axes.zip.items()):
        try:
            check_axis_path(axis)
            check_axis_values(axis, values)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    hardware = spec.hardware if not spec.hardware.endswith((".yaml", ".yml")) else str(
        _resolve_path(spec.hardware, path.parent))
    target = load_target(hardware)
    base = target.hardware
    _check_kind_of_sweep(spec, path, target.system is not None, base.name)
    from workloads.models import load_model

    points_axes = design_points(spec.axes)
    entries = {entry.at(axes) for axes in points_axes for entry in spec.models}
    for entry in sorted(entries, key=lambda e: e.model_dump_json()):  # what does not apply fails before any work
        try:
            check_entry(load_model(entry.name), entry, spec.include_head, spec.trace)
        except InputError as exc:
            raise InputError(f"{path}: models: {entry.name}: {exc}") from None
    configs, names = _load_configs(spec, path, hardware if target.system is None else target.system.chip)
    _check_attention_axes(path, points_axes, [configs[name]["config"] for name in names])
    points: list[Point] = []
    for axis_values in points_axes:
        for config in names:
            for model in spec.models:
                if config.startswith(CHECKPOINT_KEY) and config != CHECKPOINT_KEY + model.name:
                    continue  # a checkpoint's own config runs that checkpoint only
                label = CHECKPOINT if config.startswith(CHECKPOINT_KEY) else Path(config).stem
                points.append(Point(len(points), point_id(axis_values, label, model), axis_values, config,
                                    model.at(axis_values)))
    return spec, Plan(spec, base.model_dump(), target.system.model_dump() if target.system else None, configs,
                      tuple(points))


def _check_kind_of_sweep(spec: SweepSpec, path: Path, on_system: bool, chip: str) -> None:
    """System axes need a system; the rate axis a serving sweep, whose requests say what each generates."""
    if not on_system and any(axis == "chips" or axis.startswith("parallel.") for axis in spec.axes.paths):
        raise InputError(f"{path}: the axes chips and parallel.* need a system preset as hardware, not {chip}")
    if spec.serve is None and "rate" in spec.axes.paths:
        raise InputError(f"{path}: the axis rate sets a serving sweep's arrival rate: add serve: {{num_requests: N}}")
    if spec.serve is not None and (any(entry.new_tokens is not None for entry in spec.models)
                                   or "model.new_tokens" in spec.axes.paths):
        raise InputError(f"{path}: serve: the requests say how many tokens each generates; drop new_tokens")


CHECKPOINT_KEY = "checkpoint:"  # the plan's key of a checkpoint model's own config: checkpoint:<its directory>


def _load_configs(spec: SweepSpec, path: Path, hardware: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each config of the sweep (a file, or ``checkpoint``: every model entry's own recipe) with its baseline,
    by key, and the keys in order; two configs the table could not tell apart are refused."""
    configs: dict[str, dict[str, Any]] = {}
    names: list[str] = []
    for name in spec.configs:
        if name == CHECKPOINT:
            for entry in spec.models:
                try:
                    derived = checkpoint_run(entry.name, hardware).policy
                except InputError as exc:
                    raise InputError(f"{path}: configs: checkpoint: {entry.name}: {exc}") from None
                baseline = load_baseline(derived)
                configs[CHECKPOINT_KEY + entry.name] = {"config": derived.config.model_dump(),
                                                        "baseline": baseline.config.model_dump() if baseline else None}
                names.append(CHECKPOINT_KEY + entry.name)
            continue
        resolved = resolve_run_config(name, path.parent)
        policy = load_run_config(resolved)
        if any(Path(seen).stem == resolved.stem for seen in names):
            raise InputError(f"{path}: two configs are named {resolved.stem!r}; rename one")
        clash = [seen for seen in names if configs[seen]["config"]["name"] == policy.name]
        if clash:
            raise InputError(f"{path}: {resolved} and {clash[0]} both say name: {policy.name}; the table could "
                             "not tell them apart, rename one")
        baseline = load_references(policy)
        configs[str(resolved)] = {"config": policy.config.model_dump(),
                                  "baseline": baseline.config.model_dump() if baseline else None}
        names.append(str(resolved))
    return configs, names


def _check_attention_axes(path: Path, points_axes: list[dict[str, Any]], configs: list[dict[str, Any]]) -> None:
    """The attention axes' values, as every config takes them, before any work."""
    for axis_values in points_axes:
        for config in configs:
            validate(RunConfig, config_at(config, axis_values), f"{path}: {config['name']}")


def check_entry(spec: Any, entry: ModelEntry, include_head: bool, traced: bool) -> None:
    """A model entry's knobs apply to its model (a generation needs a decoder, its head, the closed form)."""
    spec.resolve(entry.workload())
    if entry.new_tokens is not None:
        if traced:
            raise InputError("new_tokens: a generation runs the closed form (trace: false)")
        if not spec.family.phases:
            raise InputError(f"new_tokens: {spec.name} has no decoder")
        if entry.workload().phase is not None:
            raise InputError("phase does not apply to a generation entry (it runs a prefill, then decode steps)")
        if entry.workload().decoder_tokens is not None:  # as `accelsim generate`, which has no such option
            raise InputError("decoder_tokens does not apply to a generation entry (the decoder starts from its "
                             "start token and runs new_tokens steps)")
        if not include_head:
            raise InputError("a generation needs the LM head (include_head: true)")
        if entry.new_tokens > 1:  # the last decode step fits the model's positions
            prompt = spec.resolve(entry.workload())
            knob = spec.family.cache_knob
            first = prompt.tokens if knob == "tokens" else 1  # an encoder-decoder's decoder starts from one token
            spec.resolve(replace(prompt, phase="decode", **{knob: first + entry.new_tokens - 2}))


def _resolve_path(name: str, base_dir: Path) -> Path:
    candidate = Path(name)
    return candidate if candidate.is_absolute() or candidate.exists() else base_dir / name
