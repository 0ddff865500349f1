"""Pipeline parallelism in generation: microbatches through stages (pure: no I/O).

The blocks are split into ``pp`` stages (workloads/parallel.py), each on its own chips; the batch of B prompts
runs as ``m`` microbatches of B / m. Each stage is simulated as one pass per microbatch (its prefill, then its
decode steps at every cache length: :func:`stage_generation`), its chips holding the KV caches of all m
microbatches. With t_s a stage's time for one microbatch (GPipe's forward schedule):

- the prefill: microbatch j leaves the last stage at sum_s t_s + j x max_s t_s, so the time to the first
  token of every prompt is sum_s t_s + (m - 1) x max_s t_s;
- each decode step: the microbatches cycle through the stages, each waiting for its own token before its
  next step, so a step of every sequence takes max(sum_s d_s, m x max_s d_s): the round trip of one
  microbatch, or the busiest stage's work for all of them.

A stage's busy share is its m microbatches' work over the whole generation; the bubble is the mean idle
share. The frames and the steps hold one chip of each stage (every op of the model once, for all m
microbatches); the system has tp x ep such chips per stage.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from simulator.analysis.generation import STEP_COLUMNS, Generation, stage_generation
from simulator.energy.accounting import leakage_mw
from simulator.engine import Results, Simulator
from simulator.engine.records import ADDITIVE_COLUMNS
from workloads.errors import InputError
from workloads.models import ModelSpec, Workload
from workloads.parallel import PipelineStage

STAGE_COLUMNS = ("stage", "first_layer", "last_layer", "prefill_ms", "decode_step_ms", "busy_share", "weight_bytes",
                 "kv_cache_bytes", "peak_activation_bytes")
_SUMMED = ("array_cycles", "sfu_cycles", "link_cycles", "stall_cycles", "dram_bytes", "linear_cycles",
           "attention_bmm_cycles", "other_gemm_cycles", "sfu_compute_cycles")


def pipelined(spec: ModelSpec, workload: Workload, new_tokens: int, simulator: Simulator, beams: int,
              microbatches: int) -> Generation:
    """The generation of ``workload`` split into ``workload.pp`` stages, its batch run as ``microbatches``."""
    stages = workload.pp or 1
    if stages == 1:
        raise InputError(f"--microbatches {microbatches} applies to a pipeline (--pp)")
    if microbatches < 1 or workload.batch % microbatches:
        raise InputError(f"--microbatches must divide the batch ({workload.batch}), got {microbatches}")
    part = replace(workload, batch=workload.batch // microbatches)
    runs = [stage_generation(spec, replace(part, stage=index), new_tokens, simulator, beams, resident=microbatches)
            for index in range(stages)]
    per_ms = simulator.hardware.array.clock_mhz * 1e3
    prefills = [int(run.prefill.totals["total_cycles"]) for run in runs]
    ttft = sum(prefills) + (microbatches - 1) * max(prefills)
    steps = _steps(runs, microbatches, per_ms, leakage_mw(simulator.costs))
    e2e = ttft + int(steps["total_cycles"].sum())
    layers = int(spec.config["num_hidden_layers"])
    rows = []
    for index, run in enumerate(runs):
        blocks = PipelineStage(stages, index).layers(layers)
        decode = [int(cycles) for cycles in run.steps["total_cycles"]]
        rows.append({"stage": index, "first_layer": blocks[0], "last_layer": blocks[-1],
                     "prefill_ms": prefills[index] / per_ms,
                     "decode_step_ms": sum(decode) / len(decode) / per_ms if decode else None,
                     "busy_share": microbatches * (prefills[index] + sum(decode)) / e2e,
                     "weight_bytes": run.weight_bytes, "kv_cache_bytes": run.kv_cache_bytes,
                     "peak_activation_bytes": run.peak_activation_bytes})
    fullest = max(runs, key=lambda run: run.weight_bytes + run.kv_cache_bytes + run.peak_activation_bytes)
    decodes = [run.decode for run in runs if run.decode is not None]
    notes = tuple(dict.fromkeys(note for run in runs for note in run.notes))
    return Generation(_joined([run.prefill for run in runs], microbatches, simulator),
                      _joined(decodes, microbatches, simulator) if decodes else None, steps, runs[0].prompt_tokens,
                      new_tokens, workload.batch, beams, fullest.weight_bytes, fullest.kv_cache_bytes,
                      fullest.peak_activation_bytes, notes, runs[0].ranks * stages, runs[0].ranks, ttft,
                      pd.DataFrame(rows, columns=list(STAGE_COLUMNS)), microbatches)


def _joined(frames: list[Results], microbatches: int, simulator: Simulator) -> Results:
    """The stages' per-op frames one after another, each op's additive columns for all microbatches."""
    joined = simulator.owned(Results(pd.concat(frames, ignore_index=True)))
    for column in ADDITIVE_COLUMNS:
        joined[column] = joined[column] * microbatches
    joined.notes = list(frames[0].notes)
    return joined


def _steps(runs: list[Generation], microbatches: int, per_ms: float, static_mw: float) -> pd.DataFrame:
    """One row per decode step of every sequence: its time through the pipeline (see the module), and the
    work of one chip of each stage for all microbatches (energy: their dynamic energy and leakage)."""
    rows = []
    for number in range(len(runs[0].steps)):
        at = [run.steps.iloc[number] for run in runs]
        times = [int(row["total_cycles"]) for row in at]
        cycles = max(sum(times), microbatches * max(times))
        dynamic = sum(row["energy_pj"] - static_mw * row["latency_ms"] * 1e6 for row in at)
        row = {"step": number + 1, "cache_tokens": int(at[0]["cache_tokens"]), "total_cycles": cycles,
               "latency_ms": cycles / per_ms,
               **{column: microbatches * sum(row[column] for row in at) for column in _SUMMED},
               "energy_pj": microbatches * dynamic + static_mw * len(runs) * cycles / per_ms * 1e6}
        rows.append(row)
    return pd.DataFrame(rows, columns=list(STEP_COLUMNS))
