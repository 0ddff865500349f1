"""``accelsim run``: one model under one run config, with its comparisons, weight memory and energy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from simulator.cli.options import (
    StrictCommand,
    chosen_format,
    chosen_plan,
    format_options,
    load_policy,
    make_workload,
    parallel_options,
    workload_options,
)
from workloads.errors import InputError

if TYPE_CHECKING:
    from simulator.analysis.comparison import Comparison
    from simulator.engine import Results
    from simulator.formats.storage import Footprint
    from workloads.models import Workload
    from workloads.ops import Trace


@click.command(cls=StrictCommand)
@click.argument("config", type=click.Path())
@workload_options
@parallel_options
@click.option("--include-frontend/--exclude-frontend", default=None,
              help="Wav2vec2's convolutional feature encoder (default: included, the whole model; the paper's "
                   "figures exclude it). Refused for a model without one.")
@click.option("--include-head/--exclude-head", default=None,
              help="The task head (default: included, the whole model; the paper's figures cover the backbone). "
                   "Refused for a model without one.")
@click.option("--timing", type=click.Choice(["default", "scalesim"]), default="default", show_default=True)
@click.option("--accounting", type=click.Choice(["default", "zigzag"]), default="default", show_default=True,
              help="Energy accounting: zigzag counts accesses as ZigZag 3.9.1 does (docs/energy.md).")
@format_options(("table", "csv", "json"), "table: summary; csv: one row per op; json: summary object.")
@click.option("--out", type=click.Path(), default=None, help="Write per-op CSV, summary JSON and plots to DIR.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out directory.")
@click.option("--trace", "use_tracer", is_flag=True,
              help="Simulate the real transformers model traced on the meta device (hf extra) instead of the "
                   "closed form: ops named after its modules, with the same roles, blocks and groups.")
def run(config: str, model: str, hardware_name: str | None, tp: int | None, ep: int | None, pp: int | None,
        include_frontend: bool | None,
        include_head: bool | None, timing: str, accounting: str, fmt: str | None, as_json: bool, out: str | None,
        force: bool, use_tracer: bool, **knobs: Any) -> None:
    """Simulate MODEL under run CONFIG: cycles, latency, time breakdown, speedups, weight memory."""
    import json

    from simulator.analysis.comparison import compare
    from simulator.cli.options import silicon_accuracy
    from simulator.energy.accounting import system_energy
    from simulator.engine import Simulator
    from simulator.report.files import check_out_dir
    from simulator.report.summary import format_run, run_summary
    from simulator.spec.run_config import load_baseline
    from simulator.spec.system import check_plan, load_target
    from simulator.spec.weight_masks import weight_masks

    fmt = chosen_format(fmt, as_json)
    out_dir = check_out_dir(out, force) if out else None
    policy, sources = load_policy(config, model, hardware_name)
    baseline = load_baseline(policy)
    target = load_target(hardware_name or policy.config.hardware)
    hardware = target.hardware
    plan = chosen_plan(policy, tp=tp, ep=ep, pp=pp)
    if plan.pp > 1 or plan.microbatches > 1:
        raise InputError("--pp: `run` costs one pass on each chip alike; pipeline stages run in `accelsim generate` "
                         "(its prefill is the pass, microbatched through the stages)")
    check_plan(target.system, hardware.name, plan.tp, plan.ep)
    if use_tracer and plan.chips > 1:
        raise InputError("--trace traces the whole model on one chip; it does not split it (--tp, --ep)")
    trace = _scoped_trace(model, plan.split(make_workload(knobs)), use_tracer, include_frontend,
                          include_head)
    masks = weight_masks(policy, trace)
    if accounting != "default" and hardware.energy is None:
        raise InputError(f"--accounting {accounting}: hardware {hardware.name} has no energy section")
    simulator = Simulator(hardware, policy, timing=timing, mask_for=masks, accounting=accounting,
                          system=target.system)
    comparison = compare(trace, simulator, baseline)
    # the plan the simulation ran under: what it stores is what it streams
    memory = comparison.plan.footprint(trace, simulator.masked.kept if masks else None)
    summary = run_summary(comparison.results, memory, comparison.plan, model=trace.model, config=policy.name,
                          hardware=target.name, baseline=comparison.baseline_results,
                          baseline_name=baseline.name if baseline else None, fp16=comparison.fp16_results,
                          native=comparison.native_results, workload=dict(trace.workload))
    if target.system is not None:  # every chip runs this pass: the bytes are each chip's, the energy all of them
        summary.update(chip=hardware.name, chips=target.chips, parallel={"tp": plan.tp, "ep": plan.ep},
                       energy=system_energy(summary["energy"], target.chips) if summary["energy"] is not None
                       else None)
    summary["notes"] = [*sources, *summary["notes"]]
    summary["silicon"] = silicon_accuracy(hardware, [str(trace.workload.get("phase", "prefill"))])
    if fmt == "table":
        click.echo(format_run(summary))
    elif fmt == "json":
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(comparison.results.to_csv(index=False), nl=False)
    if out_dir is not None:
        written = _write_outputs(out_dir, comparison, summary, memory, trace.model, hardware.name)
        click.echo(f"wrote {written} to {out_dir}", err=True)


def _scoped_trace(model: str, workload: Workload, use_tracer: bool, include_frontend: bool | None,
                  include_head: bool | None) -> Trace:
    """The model's trace, with the frontend and head kept or dropped as asked (refused where absent)."""
    from simulator.analysis.paper import model_trace, scope

    whole = model_trace(model, workload, use_tracer)
    present = {op.group for op in whole}
    for flag, group, value in (("frontend", "frontend", include_frontend), ("head", "head", include_head)):
        if value is not None and group not in present:
            raise InputError(f"--{'include' if value else 'exclude'}-{flag}: {model} has no {group} "
                             f"(with these settings)")
    return scope(whole, include_frontend is not False, include_head is not False)


def _write_outputs(out_dir: Path, comparison: Comparison, summary: dict[str, Any], memory: Footprint, model: str,
                   hardware: str) -> str:
    """ops.csv, summary.json and the plots, staged and swapped in whole; the names written."""
    from simulator.report.files import staged_dir
    from simulator.report.summary import breakdown, plot_bars, plot_time_breakdown, storage_parts_mib, write_json

    name = comparison.results_name
    results, baseline, baseline_results = comparison.results, comparison.baseline, comparison.baseline_results
    with staged_dir(out_dir) as staging:
        results.to_csv(staging / "ops.csv", index=False)
        write_json(staging / "summary.json", summary)
        runs = {name: breakdown(results)}
        if baseline is not None and baseline_results is not None and baseline.name != name:
            runs[baseline.name] = breakdown(baseline_results)
        for label, other in _comparison_runs(comparison):
            runs[label] = breakdown(other)
        plot_time_breakdown({model: runs}, staging / "time_breakdown", f"{model} on {hardware}: time by category")
        plot_bars(storage_parts_mib(memory), staging / "memory_by_group", "layer group",
                  "parameter storage (MiB)", f"{model} under {name}: what the parameters store", stacked=True)
        written = "ops.csv, summary.json, time_breakdown.png/svg, memory_by_group.png/svg"
        if summary["energy"] is not None:
            from simulator.report.energy import plot_energy

            runs_energy = {name: summary["energy"]["by_component"]}
            if baseline is not None and baseline_results is not None and baseline_results is not results:
                runs_energy[f"baseline {baseline.name}"] = baseline_results.totals["energy"]["by_component"]
            for label, other in _comparison_runs(comparison):
                if other is not results:
                    runs_energy[label] = other.totals["energy"]["by_component"]
            plot_energy(runs_energy, staging / "energy_breakdown", f"{model} on {hardware}: energy by component")
            written += ", energy_breakdown.png/svg"
    return written


def _comparison_runs(comparison: Comparison) -> list[tuple[str, Results]]:
    """The dense FP16 run and, where the chip's own format is another, the dense native one, labelled."""
    runs: list[tuple[str, Results]] = []
    if comparison.fp16_results is not None:
        runs.append(("fp16 dense", comparison.fp16_results))
    native = comparison.native_results
    if native is not None and native is not comparison.fp16_results:
        name = native.hardware.sfu_precision.name if native.hardware is not None else "native"
        runs.append((f"{name} dense (native)", native))
    return runs
