"""Evaluating a sweep's design points (pure): one table row per (point, config, model), the runs behind it
memoised per process, so a config and another config's identical baseline on one design point run once."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from simulator.analysis.sweep import (
    GENERATION_COLUMNS,
    MODEL_COLUMNS,
    SWEEP_ENERGY_COLUMNS,
    ModelEntry,
    Point,
    ServeEntry,
    SweepSpec,
)
from simulator.analysis.sweep_axes import config_at, hardware_at, plan_at, system_at
from simulator.spec.hardware import Hardware
from simulator.spec.run_config import Policy, RunConfig
from simulator.spec.system import ParallelPlan, System
from workloads.errors import InputError
from workloads.ops import Trace


@functools.lru_cache(maxsize=64)
def _trace(entry: ModelEntry, include_frontend: bool, include_head: bool, traced: bool, plan_json: str = "{}",
           ) -> Trace:
    """The entry's trace, split as the plan says (one chip's)."""
    from simulator.analysis.paper import model_trace, scope
    if plan_json != "{}" and traced:
        raise InputError("trace: true traces the whole model on one chip; it does not split it (parallel)")
    workload = ParallelPlan.model_validate_json(plan_json).split(entry.workload())
    return scope(model_trace(entry.name, workload, traced), include_frontend, include_head)


@functools.lru_cache(maxsize=64)
def _policy(config_json: str) -> Policy:
    config = json.loads(config_json)
    return Policy(RunConfig.model_validate({"name": "sweep", "hardware": "sweep", **config}))


def evaluate_point(plan_spec: SweepSpec, base: dict[str, Any], configs: dict[str, dict[str, Any]], point: Point,
                   base_system: dict[str, Any] | None = None) -> dict[str, Any]:
    entry = configs[point.config]
    scope = (point.model, plan_spec.include_frontend, plan_spec.include_head, plan_spec.trace)
    workload = _trace(*scope).workload
    row = {"point_id": point.point_id, "point": point.index, **{f"axis:{k}": v for k, v in point.axes.items()},
           "config": entry["config"]["name"], "model": point.model.name,
           **{knob: workload.get(knob) for knob in MODEL_COLUMNS[1:-1]}, "new_tokens": point.model.new_tokens}
    if point.model.new_tokens is not None:
        row["phase"] = "generate"  # a prefill of `tokens`, then decode steps
    try:
        hardware_json = hardware_at(base, point.axes).model_dump_json()
        system = system_at(base_system, point.axes)
        plan = plan_at(plan_spec.parallel, entry["config"], point.axes)
        row.update(chips=system.chips if system is not None else 1, **plan.model_dump())
        on = (system.model_dump_json() if system is not None else "", plan.model_dump_json(exclude_defaults=True))
        config = config_at(entry["config"], point.axes)
        if plan_spec.serve is not None:
            row.update(_served(point, plan_spec.serve, hardware_json, _simulation_json(config), *on), error="")
            return row
        totals = _totals(*scope, hardware_json, _simulation_json(config), plan_spec.timing, *on)
        speedup = None
        if entry["baseline"] is not None:
            baseline_config = config_at(entry["baseline"], point.axes, config)
            try:
                baseline = _totals(*scope, hardware_json, _simulation_json(baseline_config), plan_spec.timing, *on)
                speedup = baseline["total_cycles"] / totals["total_cycles"]
            except InputError:  # the dense baseline does not fit where the compressed model does: no speedup
                speedup = None
        bits = {"value_bits": totals["weight_bits"] - totals["index_bits"], "index_bits": totals["index_bits"],
                "scale_bits": totals["scale_bits"], "bias_bits": totals["bias_bits"]}
        row.update(total_cycles=totals["total_cycles"], latency_ms=totals["latency_ms"],
                   **{column: totals.get(column) for column in GENERATION_COLUMNS},
                   collective_share=totals["collective_share"], utilization=totals["utilization"],
                   speedup_vs_baseline=speedup,
                   stored_bits=sum(bits.values()), **bits, dram_bytes=totals["dram_bytes"],
                   **_energy_columns(totals, hardware_json, _tokens_generated(point.model, workload)), error="")
    except InputError as exc:  # an infeasible point: its numbers are missing (<NA>), its error says why
        row.update(error=str(exc))
    return row


@functools.lru_cache(maxsize=256)
def _area_mm2(hardware_json: str) -> float | None:
    from simulator.report.energy import area_summary

    area = area_summary(Hardware.model_validate_json(hardware_json))
    return area["total_mm2"] if area else None


def _tokens_generated(entry: ModelEntry, workload: Mapping[str, int | str]) -> int | None:
    """Tokens a point generates: B x N for a generation, one per sequence for a decode step, none for a
    prefill (or a model that generates nothing)."""
    if entry.new_tokens is not None:
        return int(workload["batch"]) * entry.new_tokens
    return int(workload["batch"]) if workload.get("phase") == "decode" else None


def _energy_columns(totals: dict[str, Any], hardware_json: str, tokens: int | None) -> dict[str, Any]:
    energy = totals.get("energy")
    if energy is None:
        return dict.fromkeys(SWEEP_ENERGY_COLUMNS)
    return {"energy_uj": energy["total_pj"] / 1e6,
            "energy_per_token_uj": energy["total_pj"] / tokens / 1e6 if tokens else None,
            "tops_per_w": energy["tops_per_w"], "effective_tops_per_w": energy["effective_tops_per_w"],
            "area_mm2": _area_mm2(hardware_json)}


def _simulation_json(config: dict[str, Any]) -> str:
    """A run config as a cache key: only what changes results (not its name or baseline)."""
    return RunConfig.model_validate(config).simulation_key()


@functools.lru_cache(maxsize=4096)
def _totals(entry: ModelEntry, include_frontend: bool, include_head: bool, traced: bool, hardware_json: str,
            config_json: str, timing: str, system_json: str = "", plan_json: str = "{}") -> dict[str, Any]:
    """Run totals, memoised per process: a config and another config's identical baseline on the same
    design point are simulated once. A generation's are its end-to-end totals (prefill plus decode); on a
    system (``system_json``), split as ``plan_json`` says, with the system's energy."""
    from simulator.analysis.generation import generate, generation_summary
    from simulator.energy.accounting import system_energy
    from simulator.engine import Simulator
    from simulator.spec.system import check_plan
    from simulator.spec.weight_masks import weight_masks
    from workloads.models import load_model

    hardware = Hardware.model_validate_json(hardware_json)
    system = System.model_validate_json(system_json) if system_json else None
    plan = ParallelPlan.model_validate_json(plan_json)
    policy = _policy(config_json)
    masks = weight_masks(policy)
    simulator = Simulator(hardware, policy, timing=timing, mask_for=masks, system=system)
    if entry.new_tokens is None:
        if plan.pp > 1 or plan.microbatches > 1:
            raise InputError("pipeline stages run in a generation (a model entry with new_tokens)")
        check_plan(system, hardware.name, plan.tp, plan.ep)
        totals = simulator.run(_trace(entry, include_frontend, include_head, traced, plan_json)).totals
        energy = system_energy(totals.energy, plan.chips) if totals.energy is not None else None
        return {**totals, "energy": energy, "collective_share": totals.link_cycles / totals.total_cycles}
    workload = plan.split(entry.workload())
    generation = generate(load_model(entry.name), workload, entry.new_tokens, simulator,
                          microbatches=plan.microbatches)
    summary = generation_summary(generation, hardware)
    prefill = generation.prefill.totals
    decode_bytes = generation.decode.totals["dram_bytes"] if generation.decode is not None else 0
    cycles = generation.first_token_cycles + (int(generation.steps["total_cycles"].sum()) if len(generation.steps)
                                              else 0)
    return {**prefill, "total_cycles": cycles, "latency_ms": summary["e2e_ms"],
            "dram_bytes": prefill["dram_bytes"] + decode_bytes, "utilization": summary["utilization"],
            "collective_share": summary["collective_share"],
            **{column: summary[column] for column in GENERATION_COLUMNS}, "energy": summary["energy"]}


def _served(point: Point, serve: ServeEntry, hardware_json: str, config_json: str, system_json: str, plan_json: str,
            ) -> dict[str, Any]:
    """A serving point's columns: its request stream (at the rate axis's rate) served as ``accelsim serve`` does."""
    from simulator.serving.requests import generate_requests, parse_lengths, sampled

    rate = point.axes.get("rate", serve.rate)
    requests = sampled(generate_requests(serve.num_requests, rate, parse_lengths(serve.prompt_tokens, "prompt_tokens"),
                                         parse_lengths(serve.output_tokens, "output_tokens"), serve.seed),
                       serve.samples, serve.beams)
    slo = None
    if serve.slo is not None:
        from simulator.serving.metrics import parse_slo

        slo = parse_slo(serve.slo)
    runner = _runner(point.model, hardware_json, config_json, system_json, plan_json, serve.model_dump_json())
    summary = runner.run(requests, slo).summary
    chips = runner.spec.tp or 1
    tokens = summary["throughput_tokens_per_s"]  # None (as every latency) when no request completed
    energy_j, per_token_j = summary["energy_j"], summary["energy_per_token_j"]
    return {"rate": rate, "latency_ms": summary["duration_s"] * 1e3, "tokens_per_s": tokens,
            "tokens_per_s_per_chip": None if tokens is None else tokens / chips,
            "requests_per_s": summary["throughput_requests_per_s"],
            "goodput_requests_per_s": summary.get("goodput_requests_per_s"),
            "ttft_p50_ms": summary["ttft_ms"]["p50"], "ttft_p99_ms": summary["ttft_ms"]["p99"],
            "tpot_p50_ms": summary["tpot_ms"]["p50"], "tpot_p99_ms": summary["tpot_ms"]["p99"],
            "e2e_p99_ms": summary["e2e_ms"]["p99"], "completed": summary["completed"], "rejected": summary["rejected"],
            "energy_uj": energy_j * 1e6 if energy_j is not None else None,
            "energy_per_token_uj": None if per_token_j is None else per_token_j * 1e6}


@functools.lru_cache(maxsize=64)
def _runner(entry: ModelEntry, hardware_json: str, config_json: str, system_json: str, plan_json: str,
            serve_json: str) -> Any:
    """A serving runner per (model, chip, config, system, plan, stream): rates share its iteration costs."""
    from dataclasses import replace

    from simulator.engine import Simulator
    from simulator.serving.defaults import default_max_tokens, swap_space_bytes
    from simulator.serving.server import ServeSettings
    from simulator.serving.session import ServingRunner
    from simulator.spec.weight_masks import weight_masks
    from workloads.models import load_model

    serve = ServeEntry.model_validate_json(serve_json)
    plan = ParallelPlan.model_validate_json(plan_json)
    if plan.ep > 1 or plan.pp > 1 or plan.microbatches > 1:
        raise InputError("serving splits a model tensor-parallel only (parallel.tp)")
    policy = _policy(config_json)
    system = System.model_validate_json(system_json) if system_json else None
    spec = load_model(entry.name)
    spec = replace(spec, tp=plan.tp) if plan.tp > 1 else spec
    context = int(spec.config.get("max_position_embeddings") or 0) or None
    budget = serve.max_tokens or default_max_tokens(serve.scheduler, context)
    simulator = Simulator(Hardware.model_validate_json(hardware_json), policy, mask_for=weight_masks(policy),
                          system=system)
    settings = ServeSettings(serve.scheduler, serve.max_batch, budget, entry.workload().expert_imbalance,
                             serve.preemption, swap_space_bytes(serve.preemption, serve.swap_space))
    return ServingRunner(spec, simulator, settings, serve.kv_block_size, policy.name)


def evaluate_chunk(plan_spec: SweepSpec, base: dict[str, Any], configs: dict[str, dict[str, Any]], points: list[Point],
                   base_system: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [evaluate_point(plan_spec, base, configs, point, base_system) for point in points]
