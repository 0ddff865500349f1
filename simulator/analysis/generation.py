"""Generation: a prefill, then decode steps over a growing KV cache (pure: no I/O).

N new tokens for a batch of B prompts of P tokens:

- the prefill runs the prompts, fills the KV cache and computes the first new token (the LM head on
  the last position only, as ``generate()`` does): its time is the time to first token (TTFT);
- decode steps s = 1 .. N - 1 each run one token per sequence against a cache of P + s - 1 tokens and
  append to it: their mean is the time per output token (TPOT).

An encoder-decoder model's prefill runs the encoder over the prompt and the decoder over its start
token, filling the decoder's self-attention cache and every block's cross-attention cache (the encoder
output's keys and values); its decode step s runs the decoder alone against a self-attention cache of
s tokens and the cross-attention cache of P.

Every decode step costs exactly what ``simulate`` gives that step alone, but steps share the work that
does not depend on the cache length. The engine lowers and places the step at both ends of a range of
cache lengths. Tensor sizes only grow with the cache and placement is first-fit in a fixed order, so
when every tensor has the same home at both ends it has that home throughout: the steps whose sizes do
not change then cost the same at every length, and only the growing ones (attention BMMs, score ops,
cache reads) are re-costed per length, once per distinct step (the blocks repeat). Sizes are affine in
the cache length (checked at three lengths). A range whose ends differ is split in two; lengths where
element-wise fusion could change (two affine sizes meeting) are simulated whole, as are all steps when
a decode step with more than one sample spills activations (the engine may then split the batch).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from simulator.analysis.step_growth import StepSizes, fusion_changes, grown_step, span_growth
from simulator.energy.accounting import leakage_mw
from simulator.engine import Prepared, Results, Simulator
from simulator.engine.capacity import check_fits
from simulator.engine.records import StepRecord
from simulator.engine.results import frame, run_cycles
from simulator.spec.hardware import Hardware
from simulator.spec.system import check_plan
from workloads.errors import InputError
from workloads.models import ModelSpec, Workload

# energy_pj: the step's dynamic energy plus the chip's leakage over its latency (empty without an energy
# section), so the steps' and the prefill's add up to the generation's total.
STEP_COLUMNS = ("step", "cache_tokens", "total_cycles", "latency_ms", "array_cycles", "sfu_cycles", "link_cycles",
                "stall_cycles", "dram_bytes", "linear_cycles", "attention_bmm_cycles", "other_gemm_cycles",
                "sfu_compute_cycles", "energy_pj")


@dataclass(frozen=True)
class Generation:
    prefill: Results  # the prompt pass (with the first token's LM head)
    decode: Results | None  # per op, summed over the decode steps (None when only one token is generated)
    steps: pd.DataFrame  # one row per decode step (STEP_COLUMNS)
    prompt_tokens: int
    new_tokens: int
    batch: int  # prompts
    beams: int  # sequences decoded per prompt
    weight_bytes: int  # stored weights (values, indices, scales, biases)
    kv_cache_bytes: int  # the KV cache at the end, at its stored precision
    peak_activation_bytes: int  # most activation bytes alive at once, in any step
    notes: tuple[str, ...]
    chips: int = 1  # chips the model is split over (tp x ep x pp); the bytes above are each chip's (the fullest)
    ranks: int = 1  # chips that each run every op of the frames above (tp x ep): chips / ranks pipeline stages
    ttft_cycles: int | None = None  # the time to the first token, when not the prefill frame's (a pipeline)
    stages: pd.DataFrame | None = None  # a pipeline's stages (simulator/analysis/pipeline.py), else None
    microbatches: int = 1

    @property
    def first_token_cycles(self) -> int:
        return self.ttft_cycles if self.ttft_cycles is not None else int(self.prefill.totals["total_cycles"])


def generate(spec: ModelSpec, workload: Workload, new_tokens: int, simulator: Simulator, beams: int = 1,
             microbatches: int = 1) -> Generation:
    """Simulate a prefill of ``workload.tokens`` for ``workload.batch`` prompts, then ``new_tokens - 1``
    decode steps of ``beams`` sequences per prompt (each beam with its own copy of the cache, as
    Hugging Face's beam search keeps them); split into ``workload.pp`` pipeline stages, the batch runs as
    ``microbatches`` (see simulator/analysis/pipeline.py)."""
    if new_tokens < 1:
        raise InputError(f"--new-tokens must be at least 1, got {new_tokens}")
    if beams < 1:
        raise InputError(f"--beams must be at least 1, got {beams}")
    if not spec.family.phases:
        raise InputError(f"{spec.name} has no decoder: {spec.config['model_type']} models run one forward pass")
    # generation sets these for each pass it runs: a value given would be ignored
    for knob in ("phase", "logits_to_keep", "stage", *(("decoder_tokens",) if spec.family.cache_knob == "decoder_tokens"
                                                        else ())):
        if getattr(workload, knob) is not None:
            raise InputError(f"a generation runs the prefill and then the decode steps, and sets {knob} for each "
                             f"pass: leave the workload's {knob} unset (got {getattr(workload, knob)!r})")
    stages = workload.pp or 1
    check_plan(simulator.system, simulator.hardware.name, workload.tp or 1, workload.ep or 1, stages)
    if stages > 1 or microbatches != 1:
        from simulator.analysis.pipeline import pipelined

        return pipelined(spec, workload, new_tokens, simulator, beams, microbatches)
    return stage_generation(spec, workload, new_tokens, simulator, beams)


def stage_generation(spec: ModelSpec, workload: Workload, new_tokens: int, simulator: Simulator, beams: int = 1,
                     resident: int = 1) -> Generation:
    """:func:`generate` on one pipeline stage (or the whole model), whose chips hold the KV caches of
    ``resident`` such batches (a pipeline's microbatches) in the capacity check."""
    head = spec.resolve(workload).head
    knob = spec.family.cache_knob  # tokens (decoder-only) or decoder_tokens (encoder-decoder)
    start: dict[str, Any] = {"decoder_tokens": 1} if knob == "decoder_tokens" else {}  # the start token
    prompt = spec.resolve(replace(workload, phase="prefill", logits_to_keep=1 if head == "lm" else None, **start))
    decoding = replace(prompt, batch=prompt.batch * beams, logits_to_keep=None)
    first = getattr(prompt, knob)
    lengths = range(first, first + new_tokens - 1)  # self-attention cache tokens before each decode step
    if lengths:  # the last step attends to P + N - 1 tokens (the N-th token is never fed back)
        spec.resolve(decode_step(decoding, knob, lengths[-1]))
    prefill = simulator.run(spec.trace(prompt))
    assert prefill.footprint is not None  # a run's own
    notes = list(prefill.notes)
    steps = pd.DataFrame(columns=list(STEP_COLUMNS))
    decode, held = None, prefill.footprint
    if lengths:
        decoder = _Decoder(spec, decoding, simulator)
        per_op, rows = decoder.run(lengths)
        notes += [note for note in decoder.notes if note not in notes]
        decode = simulator.owned(frame(per_op))
        decode.notes = notes
        steps = pd.DataFrame(rows, columns=list(STEP_COLUMNS))
        # The most the run holds: the cache at its longest, the activations of the prefill's groups or a step's
        last = decoder.prepare(lengths[-1]).footprint
        held = replace(last, peak_activation_bytes=max(held.peak_activation_bytes, last.peak_activation_bytes))
    ranks = (prompt.tp or 1) * (prompt.ep or 1)
    held = replace(held, state_bytes=held.state_bytes * resident)
    check_fits(held, simulator.hardware, spec.name, ranks * (prompt.pp or 1))
    kv_cache, weights, peak = held.state_bytes, held.weight_bytes, held.peak_activation_bytes
    assert prompt.tokens is not None  # resolved: every family gives its prompt a length
    return Generation(prefill, decode, steps, prompt.tokens, new_tokens, prompt.batch, beams, weights, kv_cache,
                      peak, tuple(notes), ranks, ranks)


def decode_step(workload: Workload, knob: str, length: int) -> Workload:
    """``workload`` as one decode step with a cache of ``length`` tokens in ``knob`` (tokens or decoder_tokens)."""
    changes: dict[str, Any] = {knob: length}
    return replace(workload, phase="decode", **changes)


class _Decoder:
    """Decode steps at a range of cache lengths, sharing what does not grow with the cache."""

    def __init__(self, spec: ModelSpec, prompt: Workload, simulator: Simulator) -> None:
        self.spec, self.prompt, self.sim = spec, prompt, simulator
        self.hardware = simulator.hardware
        self.static_mw = leakage_mw(simulator.costs)
        self.prepared: dict[int, Prepared] = {}
        self.notes: list[str] = []
        self.totals: list[StepRecord] | None = None  # per-op sums over the steps
        self.rows: list[dict[str, Any]] = []

    def prepare(self, length: int) -> Prepared:
        if length not in self.prepared:
            trace = self.spec.trace(decode_step(self.prompt, self.spec.family.cache_knob, length))
            self.prepared[length] = self.sim.prepare(trace)
        return self.prepared[length]

    def run(self, lengths: range) -> tuple[list[StepRecord], list[dict[str, Any]]]:
        first, last = self.prepare(lengths[0]), self.prepare(lengths[-1])
        if self.prompt.batch > 1 and (first.spilled or last.spilled):
            self.notes.append("decode steps spill activations with several samples: each step simulated whole")
            for length in lengths:
                self.add_step(length, self.sim.run_records(self.prepare(length).trace)[0])
        else:
            self.span(lengths[0], lengths[-1])
        self.rows.sort(key=lambda row: row["cache_tokens"])
        for number, row in enumerate(self.rows, start=1):
            row["step"] = number
        return self.totals or [], self.rows

    def span(self, low: int, high: int) -> None:
        """Steps at cache lengths low..high (inclusive)."""
        a, b = self.prepare(low), self.prepare(high)
        if high - low <= 2:
            for length in range(low, high + 1):
                self.add_step(length, self.sim.records(self.prepare(length)))
            return
        grows = span_growth(a, self.prepare(low + 1), b, high - low)
        if grows is None:
            middle = (low + high) // 2
            self.span(low, middle)
            self.span(middle + 1, high)
            return
        self.shared(low, high, a, grows)

    def shared(self, low: int, high: int, a: Prepared, grows: dict[int, StepSizes]) -> None:
        """Every length in low..high with a's homes: fixed steps once, growing steps per length."""
        base = self.sim.records(a)
        groups: dict[tuple[Any, ...], list[int]] = {}  # growing steps that are the same step in another block
        for index in grows:
            key = (base[index].role, base[index].kind, base[index].unit, grows[index], self.sim.step_key(a, index))
            groups.setdefault(key, []).append(index)
        special = fusion_changes(a, grows, low, high)
        fixed = [record for index, record in enumerate(base) if index not in grows]
        fixed_sums = _unit_sums(fixed)
        tensors = dict(a.lowered.tensors)
        group_sums = {key: base[members[0]].zeroed() for key, members in groups.items()}
        for length in range(low, high + 1):
            if length in special:
                self.add_step(length, self.sim.records(self.prepare(length)))
                continue
            offset = length - low
            step_records = []
            for key, members in groups.items():
                index = members[0]
                step = grown_step(a.lowered.steps[index], grows[index], offset, a.lowered.tensors, tensors)
                record = self.sim.step_record(a, index, step, tensors)
                step_records.append((record, len(members)))
                group_sums[key].add(record)
            self.rows.append(self.step_row(length, fixed_sums, step_records))
        # Per-op sums: the fixed steps once per length, each growing step its group's sums.
        count = high - low + 1 - len([length for length in special if low <= length <= high])
        records = []
        member_sums = {index: sums for key, sums in group_sums.items() for index in groups[key]}
        for index, record in enumerate(base):  # shapes and ratios: the span's first step
            member = member_sums.get(index)
            records.append(record.scaled(count, record) if member is None else record.with_sums(member))
        self.accumulate(records)

    def add_step(self, length: int, records: list[StepRecord]) -> None:
        self.rows.append(self.step_row(length, _unit_sums(records), []))
        self.accumulate(records)

    def accumulate(self, records: list[StepRecord]) -> None:
        if self.totals is None:
            self.totals = [record.copy() for record in records]  # summed into
            return
        if [r.name for r in records] != [r.name for r in self.totals]:
            raise AssertionError("decode steps lowered to different steps")  # pragma: no cover - a bug
        for total, record in zip(self.totals, records, strict=True):  # shapes and ratios: the first step
            total.add(record)

    def step_row(self, length: int, sums: dict[str, float], extra: list[tuple[StepRecord, int]]) -> dict[str, Any]:
        totals = dict(sums)
        for record, count in extra:
            for column, value in _unit_sums([record]).items():
                totals[column] += value * count
        cycles = run_cycles(int(totals["array"]), int(totals["sfu"]), int(totals["dram_bytes"]), self.hardware,
                            int(totals["launch_cycles"]), int(totals["link"]), self.sim.overlap_links)
        latency_ms = cycles / (self.hardware.array.clock_mhz * 1e3)
        return {"step": 0, "cache_tokens": length, "total_cycles": cycles, "latency_ms": latency_ms,
                "array_cycles": totals["array"], "sfu_cycles": totals["sfu"], "link_cycles": totals["link"],
                "stall_cycles": totals["stall_cycles"],
                "dram_bytes": totals["dram_bytes"], "linear_cycles": totals["linear"],
                "attention_bmm_cycles": totals["attention_bmm"], "other_gemm_cycles": totals["other_gemm"],
                "sfu_compute_cycles": totals["sfu_compute"],
                "energy_pj": totals["energy_pj"] + self.static_mw * latency_ms * 1e6}  # mW x ms = 1e6 pJ


def _unit_sums(records: list[StepRecord]) -> dict[str, float]:
    """Busy cycles per unit, DRAM bytes, stalls, launches, compute cycles per category and dynamic energy (pJ) of
    some records."""
    sums: dict[str, float] = dict.fromkeys(("array", "sfu", "link", "dram_bytes", "stall_cycles", "launch_cycles",
                                            "linear", "attention_bmm", "other_gemm", "sfu_compute", "collective",
                                            "energy_pj"), 0)
    for record in records:
        sums["energy_pj"] += record.energy_pj
        sums["launch_cycles"] += record.launch_cycles
        sums[record.unit] += record.total_cycles
        sums["dram_bytes"] += record.dram_bytes
        sums["stall_cycles"] += record.stall_cycles
        category = record.category
        sums["sfu_compute" if category.startswith("sfu_") else category] += record.compute_cycles
    return sums


def generation_summary(generation: Generation, hardware: Hardware) -> dict[str, Any]:
    """TTFT, TPOT, end-to-end latency, throughput, bytes and boundedness of a generation (milliseconds,
    tokens per second, bytes). Tokens per second counts the B x N tokens returned (one sequence per
    prompt, whatever the beams). Split over several chips: the bytes are each chip's (every chip holds
    the same), the energy the whole system's, and the collectives' share of the time is reported."""
    ran_on = generation.prefill.hardware
    if ran_on is not None and ran_on != hardware:
        raise InputError(f"this generation ran on {ran_on.name}: summarise it with that chip, not {hardware.name}")
    per_ms = hardware.array.clock_mhz * 1e3
    ttft = generation.first_token_cycles
    steps = generation.steps
    decode = int(steps["total_cycles"].sum()) if len(steps) else 0
    e2e_ms = (ttft + decode) / per_ms
    chips, share = generation.chips, generation.ranks / generation.chips  # the frames' work: one chip's of share
    links = share * (generation.prefill.totals.link_cycles + (int(steps["link_cycles"].sum()) if len(steps) else 0))
    capacity = hardware.memory.dram_capacity_bytes
    footprint = generation.weight_bytes + generation.kv_cache_bytes + generation.peak_activation_bytes
    phases = {"prefill": generation.prefill, "decode": generation.decode}
    arrays = [r[r["unit"] == "array"] for r in phases.values() if r is not None]
    useful = sum(float((a["macs"] / a["macs_per_pe"]).sum()) for a in arrays)  # PE-cycles of useful MACs
    return {
        "ttft_ms": ttft / per_ms,
        "tpot_ms": decode / per_ms / len(steps) if len(steps) else None,
        "e2e_ms": e2e_ms,
        "tokens_per_s": generation.batch * generation.new_tokens / (e2e_ms / 1e3),
        "chips": chips,
        "tokens_per_s_per_chip": generation.batch * generation.new_tokens / (e2e_ms / 1e3) / chips,
        "collective_ms": links / per_ms,
        "collective_share": links / (ttft + decode),
        "utilization": share * useful / ((ttft + decode) * hardware.pes),  # a run's: over every PE of a chip
        "prompt_tokens": generation.prompt_tokens, "new_tokens": generation.new_tokens,
        "batch": generation.batch, "beams": generation.beams,
        "weight_bytes": generation.weight_bytes, "kv_cache_bytes": generation.kv_cache_bytes,
        "peak_activation_bytes": generation.peak_activation_bytes,
        "dram_footprint_bytes": footprint, "dram_capacity_bytes": capacity,
        "bound": {phase: bound(results, hardware) for phase, results in phases.items() if results is not None},
        "energy": generation_energy(generation, hardware, e2e_ms),
        **({"pipeline": pipeline_summary(generation)} if generation.stages is not None else {}),
        "notes": list(generation.notes),
    }


def pipeline_summary(generation: Generation) -> dict[str, Any]:
    """A pipeline's stages, microbatches, its bubble (the stages' mean idle share) and each stage's row."""
    stages = generation.stages
    assert stages is not None
    return {"stages": len(stages), "microbatches": generation.microbatches,
            "bubble_share": 1.0 - float(stages["busy_share"].mean()),
            "per_stage": stages.to_dict(orient="records")}


def generation_energy(generation: Generation, hardware: Hardware, e2e_ms: float) -> dict[str, Any] | None:
    """The energy block of the whole generation (see energy.energy_summary: both phases' dynamic energy by
    component, leakage over the end-to-end latency; every chip's), per generated token (B x N of them) and by
    phase; None when the hardware has none."""
    if hardware.energy is None:
        return None
    from simulator.energy.accounting import energy_summary, system_energy
    from simulator.energy.action_costs import action_costs
    from simulator.engine.records import ENERGY_COLUMNS
    from simulator.engine.results import dense_macs

    phases = [results for results in (generation.prefill, generation.decode) if results is not None]
    share = generation.ranks / generation.chips  # the frames hold one chip's work of each stage: a mean chip's
    sums = {column: share * float(sum(results[column].sum() for results in phases)) for column in ENERGY_COLUMNS}
    macs = share * sum(int(results["macs"].sum()) for results in phases)
    dense = share * sum(dense_macs(results) for results in phases)
    energy = system_energy(energy_summary(sums, int(macs), e2e_ms, action_costs(hardware), int(dense)),
                           generation.chips)
    prefill = generation.ranks * float(generation.prefill["energy_pj"].sum())
    return {**energy, "per_token_pj": energy["total_pj"] / (generation.batch * generation.new_tokens),
            "prefill_dynamic_pj": prefill, "decode_dynamic_pj": generation.chips * sums["energy_pj"] - prefill}



def bound(results: Results, hardware: Hardware) -> str:
    """"memory" when moving the phase's DRAM bytes takes longer than its compute, else "compute"."""
    totals = results.totals
    array = int(results[results["unit"] == "array"]["compute_cycles"].sum())
    sfu = int(results[results["unit"] == "sfu"]["compute_cycles"].sum())
    compute = run_cycles(array, sfu, 0, hardware)
    return "memory" if totals["dram_cycles"] > compute else "compute"
