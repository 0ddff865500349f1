"""The ``accelsim`` command line. Bad input: one line on stderr and exit 2; internal errors: exit 1."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import click

from simulator.cli.area import area as area_command
from simulator.cli.gemm_cases import GENERIC_MACS_PER_PE, gemm_result, read_cases
from simulator.cli.generate import generate as generate_command
from simulator.cli.options import StrictGroup, given, make_workload, workload_options
from simulator.report.files import TRACE_FORMATS, trace_bytes, write_bytes_atomic
from workloads.errors import InputError
from workloads.models import Workload, load_model, zoo_names
from workloads.ops import PRUNED_LINEAR_ROLES

EXIT_USAGE = 2
EXIT_INTERNAL = 1


@click.group(cls=StrictGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """accelsim: systolic-array accelerator simulator for transformer inference."""
    ctx.obj = {"debug": debug}


@cli.command()
def models() -> None:
    """List the built-in model zoo with parameter counts (default head)."""
    rows = []
    for name in zoo_names():
        spec = load_model(name)
        trace = spec.trace()
        rows.append((name, spec.config["model_type"], spec.config.get("_name_or_path", ""),
                     trace.workload.get("head", ""), trace.params))
    width = max(len(r[0]) for r in rows)
    click.echo(f"{'name':<{width}}  {'type':<9} {'head':<10} {'parameters':>14}  source")
    for name, model_type, source, head, params in rows:
        click.echo(f"{name:<{width}}  {model_type:<9} {head:<10} {params:>14,}  {source}")


@cli.command()
@workload_options
@click.option("--format", "fmt", type=click.Choice(TRACE_FORMATS), default=None,
              help="table (the default on stdout), csv, json or parquet; with --out, the file's extension "
                   "(.txt, .csv, .json, .parquet) decides unless given, and must agree when given.")
@click.option("--out", type=click.Path(), default=None, help="Write to FILE (atomically) instead of stdout.")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.option("--trace", "use_tracer", is_flag=True,
              help="Trace the real transformers model on the meta device instead (needs the hf extra).")
def extract(model: str, batch: int, tokens: int | None, decoder_tokens: int | None, image_size: int | None,
            audio_samples: int | None, head: str | None, phase: str | None, expert_imbalance: float | None,
            fmt: str | None, out: str | None, force: bool, use_tracer: bool) -> None:
    """Print or write the op trace of one forward pass."""
    from simulator.report.files import check_out_file, format_for_path

    if out is not None:
        check_out_file(out, force)
    fmt = format_for_path(out, fmt) if out is not None else fmt or "table"
    spec = load_model(model)
    workload = make_workload(batch, tokens, decoder_tokens, image_size, audio_samples, head, phase, expert_imbalance)
    if use_tracer:
        from workloads.hf_trace import trace_hf

        trace = trace_hf(spec, spec.resolve(workload))
    else:
        trace = spec.trace(workload)
    if fmt == "parquet" and out is None:
        raise InputError("--format parquet needs --out FILE")
    data = trace_bytes(trace, fmt)
    if out is None:
        click.echo(data.decode(), nl=False)
    else:
        write_bytes_atomic(out, data)
        click.echo(f"wrote {len(trace)} ops to {out}", err=True)


@cli.command()
@click.option("--m", type=int, default=None, help="Rows of A and C (elements).")
@click.option("--k", type=int, default=None, help="Reduction depth (elements).")
@click.option("--n", type=int, default=None, help="Columns of B and C (elements).")
@click.option("--rows", type=int, default=None, help="PE array rows.")
@click.option("--cols", type=int, default=None, help="PE array columns.")
@click.option("--dataflow", default="ws", show_default=True, help="ws, os or is.")
@click.option("--precision", default="int8", show_default=True, help=", ".join(GENERIC_MACS_PER_PE))
@click.option("--sparsity", default=None, help="N:M pattern of the weights (B), e.g. 2:4; default dense.")
@click.option("--timing", default="default", show_default=True,
              help="default (double-buffered preload) or scalesim (SCALE-Sim 3.0.0 compute cycles).")
@click.option("--cases", type=click.Path(), default=None,
              help="CSV with columns m,k,n,rows,cols,dataflow[,precision,sparsity,timing]: one JSON line per case.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a summary line.")
def gemm(m: int | None, k: int | None, n: int | None, rows: int | None, cols: int | None, dataflow: str,
         precision: str, sparsity: str | None, timing: str, cases: str | None, as_json: bool) -> None:
    """Cycles of one product C[MxN] = A[MxK] B[KxN] on a ROWS x COLS array (or of every case in a CSV)."""
    import json

    ctx = click.get_current_context()
    if cases is not None:
        per_case = [f"--{name}" for name in ("m", "k", "n", "rows", "cols", "dataflow", "precision", "sparsity",
                                               "timing") if given(ctx, name)]
        if per_case:
            raise InputError(f"--cases takes every case's settings from its file; drop {', '.join(per_case)} "
                             "(or add them as CSV columns)")
        for row in read_cases(cases):
            click.echo(json.dumps(gemm_result(**row)))
        return
    missing = [f"--{name}" for name, v in (("m", m), ("k", k), ("n", n), ("rows", rows), ("cols", cols))
               if v is None]
    if missing:
        raise InputError(f"missing option(s) {', '.join(missing)} (or give --cases FILE.csv)")
    result = gemm_result(m, k, n, rows, cols, dataflow, precision, sparsity, timing)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"compute_cycles={result['compute_cycles']} utilization={result['utilization']:.4f} "
                   f"folds={result['folds']} ({result['timing']} timing, {precision}, {result['sparsity']})")


def _masks(policy):
    weights = policy.config.sparsity.weights
    if weights is None or not weights.uses_masks:
        return None
    from simulator.spec.mask_files import MaskProvider

    return MaskProvider(weights, policy.source.parent if policy.source else None)


def _dense_fp16(hardware, trace, timing: str, run_policy, run_results, accounting: str = "default"):
    """Dense FP16 run for the 'vs FP16' speedup, or None when the hardware has no float path."""
    from simulator.engine import simulate
    from simulator.spec.run_config import policy_from_dict

    policy = policy_from_dict({"name": "fp16_dense", "hardware": hardware.name, "precision": {"default": "fp16"}})
    if policy.config.same_simulation(run_policy.config):
        return run_results
    try:
        return simulate(trace, hardware, policy, timing=timing, accounting=accounting)
    except InputError:
        return None


@cli.command()
@click.argument("config", type=click.Path())
@workload_options
@click.option("--hardware", "hardware_name", default=None, help="Preset name or YAML path (overrides the config's).")
@click.option("--include-frontend/--exclude-frontend", default=None,
              help="Wav2vec2's convolutional feature encoder (default: included, the whole model; the paper's "
                   "figures exclude it). Refused for a model without one.")
@click.option("--include-head/--exclude-head", default=None,
              help="The task head (default: included, the whole model; the paper's figures cover the backbone). "
                   "Refused for a model without one.")
@click.option("--timing", type=click.Choice(["default", "scalesim"]), default="default", show_default=True)
@click.option("--accounting", type=click.Choice(["default", "zigzag"]), default="default", show_default=True,
              help="Energy accounting: zigzag counts accesses as ZigZag 3.9.1 does (README: Energy and area).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="table: summary; csv: one row per op; json: summary object.")
@click.option("--out", type=click.Path(), default=None, help="Write per-op CSV, summary JSON and plots to DIR.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out directory.")
@click.option("--trace", "use_tracer", is_flag=True,
              help="Simulate the real transformers model traced on the meta device (hf extra) instead of the "
                   "closed form: ops named after its modules, with the same roles, blocks and groups.")
def run(config: str, model: str, batch: int, tokens: int | None, decoder_tokens: int | None, image_size: int | None,  # noqa: C901 - to split (issue 25)
        audio_samples: int | None, head: str | None, phase: str | None, expert_imbalance: float | None,
        hardware_name: str | None,
        include_frontend: bool | None, include_head: bool | None, timing: str, accounting: str, fmt: str,
        out: str | None,
        force: bool, use_tracer: bool) -> None:
    """Simulate MODEL under run CONFIG: cycles, latency, time breakdown, speedups, weight memory."""
    import json

    from simulator.analysis.paper import model_trace, scope
    from simulator.engine import Simulator, simulate
    from simulator.formats.storage import mask_nonzeros
    from simulator.report.files import check_out_dir, staged_dir
    from simulator.report.summary import (
        breakdown,
        format_run,
        plot_bars,
        plot_time_breakdown,
        run_summary,
        storage_parts_mib,
        write_json,
    )
    from simulator.spec.hardware import load_hardware
    from simulator.spec.run_config import load_baseline, load_run_config

    out_dir = check_out_dir(out, force) if out else None
    policy = load_run_config(config)
    baseline = load_baseline(policy)
    hardware = load_hardware(hardware_name or policy.config.hardware)
    workload = make_workload(batch, tokens, decoder_tokens, image_size, audio_samples, head, phase, expert_imbalance)
    whole = model_trace(model, workload, use_tracer)
    present = {op.group for op in whole}
    for flag, group, value in (("frontend", "frontend", include_frontend), ("head", "head", include_head)):
        if value is not None and group not in present:
            raise InputError(f"--{'include' if value else 'exclude'}-{flag}: {model} has no {group} "
                             f"(with these settings)")
    trace = scope(whole, include_frontend is not False, include_head is not False)
    masks = _masks(policy)
    if masks is not None:
        masks.check_keys([op.name for op in trace if op.role in PRUNED_LINEAR_ROLES])
    if accounting != "default" and hardware.energy is None:
        raise InputError(f"--accounting {accounting}: hardware {hardware.name} has no energy section")
    simulator = Simulator(hardware, policy, timing=timing, mask_for=masks, accounting=accounting)
    results = simulator.run(trace)
    baseline_results = None
    if baseline is not None:  # a config that is its own baseline is not simulated twice
        baseline_results = results if baseline.config.same_simulation(policy.config) else simulate(
            trace, hardware, baseline, timing=timing, accounting=accounting)
    fp16_results = _dense_fp16(hardware, trace, timing, policy, results, accounting)
    plan = simulator.plan  # the decisions the simulation made: what it stores is what it streams
    memory = plan.footprint(trace, mask_nonzeros(masks) if masks else None)
    summary = run_summary(results, memory, plan, model=trace.model, config=policy.name, hardware=hardware.name,
                          baseline=baseline_results, baseline_name=baseline.name if baseline else None,
                          fp16=fp16_results,
                          workload=dict(trace.workload))
    if fmt == "table":
        click.echo(format_run(summary))
    elif fmt == "json":
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(results.to_csv(index=False), nl=False)
    if out_dir is not None:
        with staged_dir(out_dir) as staging:
            results.to_csv(staging / "ops.csv", index=False)
            write_json(staging / "summary.json", summary)
            runs = {policy.name: breakdown(results)}
            if baseline_results is not None and baseline.name != policy.name:
                runs[baseline.name] = breakdown(baseline_results)
            if fp16_results is not None:
                runs["fp16 dense"] = breakdown(fp16_results)
            plot_time_breakdown({trace.model: runs}, staging / "time_breakdown",
                                f"{trace.model} on {hardware.name}: time by category")
            plot_bars(storage_parts_mib(memory), staging / "memory_by_group", "layer group",
                      "parameter storage (MiB)", f"{trace.model} under {policy.name}: what the parameters store",
                      stacked=True)
            written = "ops.csv, summary.json, time_breakdown.png/svg, memory_by_group.png/svg"
            if summary["energy"] is not None:
                from simulator.report.energy import plot_energy

                runs_energy = {policy.name: summary["energy"]["by_component"]}
                for name, other in (("baseline " + (baseline.name if baseline else ""), baseline_results),
                                    ("fp16 dense", fp16_results)):
                    if other is not None and other is not results:
                        runs_energy[name] = other.totals["energy"]["by_component"]
                plot_energy(runs_energy, staging / "energy_breakdown",
                            f"{trace.model} on {hardware.name}: energy by component")
                written += ", energy_breakdown.png/svg"
        click.echo(f"wrote {written} to {out_dir}", err=True)


@cli.command()
@click.argument("config", type=click.Path())
@click.option("--model", "model", required=True, help="Zoo name (see `accelsim models`) or path to a config.json.")
@click.option("--head", default=None,
              help="Task head whose parameters are included: qa, pooler, classifier, ctc, lm or none "
                   "(model dependent; default: the model's default head). Storage does not depend on the "
                   "batch, sequence or image size, so those knobs do not apply here.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of the table.")
def memory(config: str, model: str, head: str | None, as_json: bool) -> None:
    """Bit-exact parameter storage of MODEL under run CONFIG, by layer group and in total."""
    import json

    from simulator.formats.storage import mask_nonzeros
    from simulator.plan.binding import bind
    from simulator.report.summary import format_memory
    from simulator.spec.hardware import load_hardware
    from simulator.spec.run_config import load_run_config

    policy = load_run_config(config)
    trace = load_model(model).trace(Workload(head=head))
    masks = _masks(policy)
    if masks is not None:
        masks.check_keys([op.name for op in trace if op.role in PRUNED_LINEAR_ROLES])
    plan = bind(policy, load_hardware(policy.config.hardware))  # as the config's hardware stores them
    result = plan.footprint(trace, mask_nonzeros(masks) if masks else None)
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else format_memory(result))


@cli.command()
@click.option("--out", type=click.Path(), default=None, help="Write reproduction.md, CSVs and figures to DIR.")
@click.option("--json", "json_path", type=click.Path(), default=None, help="Write the rows as JSON to FILE.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out directory or an existing --json file.")
def reproduce(out: str | None, json_path: str | None, force: bool) -> None:
    """Regenerate the paper's hardware figures (seed 000, section 2.4) next to the published values."""
    import json

    from simulator.analysis.paper import (
        figure_rows,
        load_paper_targets,
        load_setup,
        load_tolerances,
        setup_policies,
        setup_traces,
    )
    from simulator.analysis.reproduce import reproduce_figures
    from simulator.report.files import check_out_dir, check_out_file, staged_dir, write_bytes_atomic
    from simulator.report.summary import reproduction_table, write_reproduction
    from simulator.spec.hardware import load_hardware

    out_dir = check_out_dir(out, force) if out else None
    if json_path is not None:
        check_out_file(json_path, force, "--json")
    setup = load_setup()
    targets = load_paper_targets()
    hardware = load_hardware(setup.hardware)
    traces = setup_traces(setup)
    reproduction = reproduce_figures(traces, hardware, setup_policies(setup))
    rows = figure_rows(targets, reproduction.figures, load_tolerances())
    table = reproduction_table(rows, hardware.name, setup)
    click.echo(table)
    if json_path is not None:
        write_bytes_atomic(json_path, (json.dumps({"rows": rows}, indent=2) + "\n").encode())
    if out_dir is not None:
        with staged_dir(out_dir) as staging:
            write_reproduction(staging, rows, table, reproduction, hardware.name)
        click.echo(f"wrote reproduction.md, CSVs and figures to {out_dir}", err=True)


@cli.command()
@click.argument("sweep_file", type=click.Path())
@click.option("--out", type=click.Path(), required=True, help="Directory for results.csv/.parquet, plots, parts.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (with --executor dask).")
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default=True,
              help="Worker processes (local pool or Dask LocalCluster).")
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep in --out without recomputing.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def sweep(sweep_file: str, out: str, executor: str, scheduler: str | None, workers: int, resume: bool,
          no_progress: bool) -> None:
    """Run a design-space sweep (hardware axes x configs x models); resumable, never loses finished points."""
    from simulator.analysis.sweep import load_sweep
    from simulator.cli.sweep_run import make_executor, plot_pareto, plot_sweep, prepare_out_dir, run_sweep

    _, plan = load_sweep(sweep_file)
    out_dir = Path(out)
    pool, close = make_executor(executor, workers, scheduler)  # before --out is touched: a failed start leaves none
    try:
        prepare_out_dir(out_dir, plan, resume)
    except BaseException:
        close()
        raise
    try:
        table = run_sweep(plan, out_dir, pool, workers, progress=not no_progress)
    finally:
        close()
    plot_sweep(table, plan, out_dir / "latency")
    pareto = ", pareto.png/svg" if plot_pareto(table, plan, out_dir / "pareto") else ""
    failed = int((table["error"] != "").sum())
    click.echo(f"{len(table)} points ({failed} failed) -> {out_dir}/results.csv, results.parquet, "
               f"latency.png/svg{pareto}")


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the click group and turns every failure into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="accelsim", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("accelsim: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors: bad option, missing argument, bad value
        click.echo(f"accelsim: error: {_one_line(exc.format_message())}", err=True)
        sys.exit(EXIT_USAGE)
    except InputError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"accelsim: error: {_one_line(str(exc))}", err=True)
        sys.exit(EXIT_USAGE)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"accelsim: internal error: {exc.__class__.__name__}: {_one_line(str(exc))} "
                   "(rerun with --debug for the traceback)", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)


cli.add_command(generate_command, "generate")
cli.add_command(area_command, "area")


if __name__ == "__main__":
    main()
