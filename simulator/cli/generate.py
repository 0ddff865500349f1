"""``accelsim generate``: a prefill, then decode steps with a growing KV cache (see simulator.analysis.generation)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import click

from simulator.cli.options import (
    StrictCommand,
    chosen_format,
    chosen_plan,
    format_options,
    knob_option,
    load_policy,
    parallel_options,
    positive_int,
)
from workloads.errors import InputError
from workloads.models import Workload, load_model


@click.command(cls=StrictCommand)
@click.argument("config", type=click.Path())
@click.option("--model", "model", required=True, help="Zoo name (see `accelsim models`) or path to a config.json.")
@click.option("--prompt", type=positive_int(), required=True, help="Prompt length in tokens.")
@click.option("--new-tokens", type=int, required=True, help="Tokens to generate (the first comes from the prefill).")
@click.option("--batch", type=positive_int(), default=1, show_default=True, help="Prompts generated together.")
@click.option("--beams", type=int, default=1, show_default=True,
              help="Sequences decoded per prompt (beam search), each with its own KV cache.")
@click.option("--head", default=None, help="lm (default) or none.")
@knob_option("expert_imbalance")
@parallel_options
@click.option("--microbatches", type=positive_int(), default=None,
              help="With --pp: the batch runs through the stages as this many microbatches (default 1).")
@format_options(("table", "json"))
@click.option("--out", type=click.Path(), default=None,
              help="Write steps.csv, prefill.csv, summary.json and, when decode steps run, decode.csv and a "
                   "step-latency plot to DIR (with pipeline stages, stages.csv).")
@click.option("--force", is_flag=True, help="Replace a non-empty --out directory.")
def generate(config: str, model: str, prompt: int, new_tokens: int, batch: int, beams: int, head: str | None,
             expert_imbalance: float | None, hardware_name: str | None, tp: int | None, ep: int | None,
             pp: int | None, microbatches: int | None, fmt: str | None,
             as_json: bool,
             out: str | None, force: bool) -> None:
    """Generate NEW_TOKENS after a prompt: TTFT, TPOT, end-to-end latency, tokens/s, per-step cycles."""
    from simulator.analysis.generation import generate as run_generation
    from simulator.analysis.generation import generation_summary
    from simulator.cli.options import silicon_accuracy
    from simulator.engine import Simulator
    from simulator.report.files import check_out_dir, staged_dir
    from simulator.report.summary import breakdown, plot_steps, write_json
    from simulator.spec.system import load_target
    from simulator.spec.weight_masks import weight_masks

    fmt = chosen_format(fmt, as_json)
    if new_tokens < 1:
        raise InputError(f"--new-tokens must be at least 1, got {new_tokens}")
    if beams < 1:
        raise InputError(f"--beams must be at least 1, got {beams}")
    out_dir = check_out_dir(out, force) if out else None
    policy, sources = load_policy(config, model, hardware_name)
    target = load_target(hardware_name or policy.config.hardware)
    hardware = target.hardware
    spec = load_model(model)
    plan = chosen_plan(policy, tp=tp, ep=ep, pp=pp, microbatches=microbatches)
    prompt_workload = plan.split(Workload(batch=batch, tokens=prompt, head=head, expert_imbalance=expert_imbalance))
    masks = weight_masks(policy, spec.trace(replace(prompt_workload, pp=None)))
    simulator = Simulator(hardware, policy, mask_for=masks, system=target.system)
    generation = run_generation(spec, prompt_workload, new_tokens, simulator, beams=beams,
                                microbatches=plan.microbatches)
    summary = {"model": spec.name, "config": policy.name, "hardware": target.name,
               **({"chip": hardware.name, "parallel": plan.model_dump()} if target.system is not None else {}),
               **generation_summary(generation, hardware)}
    if sources:
        summary["notes"] = list(sources)
    summary["silicon"] = silicon_accuracy(hardware, ["prefill", "decode"] if len(generation.steps) else ["prefill"])
    summary["prefill"] = breakdown(generation.prefill).to_dict(orient="records")
    summary["decode"] = breakdown(generation.decode).to_dict(orient="records") if generation.decode is not None else []
    summary["steps"] = generation.steps[["step", "cache_tokens", "total_cycles", "latency_ms"]].to_dict(
        orient="records")
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(format_generation(summary))
    if out_dir is not None:
        written = ["steps.csv", "prefill.csv"]
        with staged_dir(out_dir) as staging:
            generation.steps.to_csv(staging / "steps.csv", index=False)
            generation.prefill.to_csv(staging / "prefill.csv", index=False)
            if generation.decode is not None:  # one new token: the prefill made it, no decode step ran
                generation.decode.to_csv(staging / "decode.csv", index=False)
                written.append("decode.csv")
            if generation.stages is not None:  # a pipeline: one row per stage
                generation.stages.to_csv(staging / "stages.csv", index=False)
                written.append("stages.csv")
            write_json(staging / "summary.json", summary)
            written.append("summary.json")
            if len(generation.steps):
                plot_steps(generation.steps, hardware.array.clock_mhz, staging / "step_latency",
                           f"{spec.name} under {policy.name} on {hardware.name}: decode steps")
                written.append("step_latency.png/svg")
        click.echo(f"wrote {', '.join(written)} to {out_dir}", err=True)


def format_generation(summary: dict[str, Any]) -> str:
    def mib(value: int) -> str:
        return f"{value / 2**20:,.1f} MiB"

    tpot = "n/a (one token)" if summary["tpot_ms"] is None else f"{summary['tpot_ms']:.3f} ms"
    capacity = summary["dram_capacity_bytes"]
    lines = [
        f"{summary['model']} under {summary['config']} on {summary['hardware']}: prompt {summary['prompt_tokens']}, "
        f"{summary['new_tokens']} new tokens, batch {summary['batch']}, beams {summary['beams']}",
        f"  time to first token  {summary['ttft_ms']:.3f} ms   (prefill: {summary['bound']['prefill']}-bound)",
        f"  time per output token {tpot}"
        + (f"   (decode: {summary['bound']['decode']}-bound)" if "decode" in summary["bound"] else ""),
        f"  end to end           {summary['e2e_ms']:.3f} ms, {summary['tokens_per_s']:,.1f} tokens/s, "
        f"array utilization {100 * summary['utilization']:.3g}%",
        f"  {'per chip: ' if summary['chips'] > 1 else ''}weights {mib(summary['weight_bytes'])}, KV cache at the "
        f"end {mib(summary['kv_cache_bytes'])}, peak activations {mib(summary['peak_activation_bytes'])}: DRAM "
        f"footprint {mib(summary['dram_footprint_bytes'])}" + (f" of {mib(capacity)}" if capacity else ""),
        *([f"  {summary['chips']} x {summary['chip']} ({plan_text(summary['parallel'])}): "
           f"{summary['tokens_per_s_per_chip']:,.1f} tokens/s per chip, collectives "
           f"{100 * summary['collective_share']:.1f}% of the time ({summary['collective_ms']:.3f} ms)"]
          if summary["chips"] > 1 else []),
        *([f"  pipeline: {pipe['stages']} stages, {pipe['microbatches']} microbatches, bubble "
           f"{100 * pipe['bubble_share']:.1f}% of the stages' time; per stage (ms) prefill "
           + ", ".join(f"{row['prefill_ms']:.3f}" for row in pipe["per_stage"])]
          if (pipe := summary.get("pipeline")) else []),
        *([f"  {summary['silicon']}"] if summary.get("silicon") else []),
    ]
    energy = summary["energy"]
    if energy is not None:
        from simulator.report.energy import joules

        lines.append(f"  energy               {joules(energy['total_pj'])}, {joules(energy['per_token_pj'])} per token "
                     f"(prefill {joules(energy['prefill_dynamic_pj'])}, decode {joules(energy['decode_dynamic_pj'])}, "
                     f"leakage {joules(energy['by_component']['leakage'])})")
    for phase in ("prefill", "decode"):
        rows = summary[phase]
        if rows:
            lines.append(f"  {phase} time by category: " + ", ".join(
                f"{row['category']} {row['percent_of_time']:.1f}%" for row in rows if row["cycles"]))
    lines += [f"  note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def plan_text(parallel: dict[str, int]) -> str:
    """"tp 8" or "ep 4": the degrees above one."""
    return ", ".join(f"{name} {degree}" for name, degree in parallel.items() if degree > 1)
