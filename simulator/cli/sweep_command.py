"""``accelsim sweep``: a design-space sweep (see sweep_run for the --out directory and executors)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from simulator.cli.options import StrictCommand

if TYPE_CHECKING:
    from simulator.analysis.sweep import Plan

# CPUs this process may run on (its affinity, which a container or taskset narrows)
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@click.command(cls=StrictCommand)
@click.argument("sweep_file", type=click.Path())
@click.option("--out", type=click.Path(), required=True, help="Directory for results.csv/.parquet, plots, parts.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (with --executor dask).")
@click.option("--workers", type=click.IntRange(min=1), default=CPUS, show_default=True,
              help="Worker processes (local pool or Dask LocalCluster), at most one per CPU this process may use.")
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep in --out without recomputing.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def sweep(sweep_file: str, out: str, executor: str, scheduler: str | None, workers: int, resume: bool,
          no_progress: bool) -> None:
    """Run a design-space sweep (hardware axes x configs x models); resumable, never loses finished points."""
    from simulator.analysis.sweep import load_sweep
    from simulator.cli.sweep_run import (
        discard_unfinished,
        make_executor,
        plot_pareto,
        plot_sweep,
        prepare_out_dir,
        run_sweep,
    )

    if scheduler is None and workers > CPUS:  # each is a process of its own: more only adds memory
        raise click.UsageError(f"--workers {workers}: this machine gives accelsim {CPUS} CPUs; a sweep's points run "
                               f"one per CPU, so give at most {CPUS}")
    _, plan = load_sweep(sweep_file)
    out_dir = Path(out)
    existed = out_dir.exists()
    pool, close = make_executor(executor, workers, scheduler)  # before --out is touched: a failed start leaves none
    try:
        prepare_out_dir(out_dir, plan, resume)
    except BaseException:
        close()
        raise
    try:
        table = run_sweep(plan, out_dir, pool, workers, progress=not no_progress)
    except BaseException:
        if not resume:  # finished points stay for --resume; a start that finished none leaves nothing
            discard_unfinished(out_dir, existed)
        raise
    finally:
        close()
    plot_sweep(table, plan, out_dir / "latency")
    pareto = ", pareto.png/svg" if plot_pareto(table, plan, out_dir / "pareto") else ""
    failed = int((table["error"] != "").sum())
    click.echo(f"{len(table)} points ({failed} failed) -> {out_dir}/results.csv, results.parquet, "
               f"latency.png/svg{pareto}")
    click.echo(_silicon_line(plan))


def _silicon_line(plan: Plan) -> str:
    """Whether the sweep's hardware is validated on silicon: its base preset's line, unless an axis varies it."""
    from simulator.cli.options import silicon_accuracy
    from simulator.spec.hardware import Hardware

    base = Hardware.model_validate(plan.base_hardware)
    varied = sorted({axis for point in plan.points for axis in point.axes
                     if not axis.startswith(("model.", "attention."))})
    shipped = silicon_accuracy(base, ["prefill", "decode"])
    if varied and shipped.startswith("validated"):
        return (f"not validated on silicon: the sweep varies {base.name} ({', '.join(varied)}); as shipped it is "
                f"{shipped}")
    return shipped
