"""``accelsim extract``: the op trace of one forward pass, printed or written."""

from __future__ import annotations

from typing import Any

import click

from simulator.cli.options import StrictCommand, make_workload, workload_options
from simulator.report.files import TRACE_FORMATS, trace_bytes, write_bytes_atomic
from workloads.errors import InputError
from workloads.models import load_model


@click.command(cls=StrictCommand)
@workload_options
@click.option("--format", "fmt", type=click.Choice(TRACE_FORMATS), default=None,
              help="table (the default on stdout), csv, json or parquet; with --out, the file's extension "
                   "(.txt, .csv, .json, .parquet) decides unless given, and must agree when given.")
@click.option("--out", type=click.Path(), default=None, help="Write to FILE (atomically) instead of stdout.")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.option("--trace", "use_tracer", is_flag=True,
              help="Trace the real transformers model on the meta device instead (needs the hf extra).")
def extract(model: str, fmt: str | None, out: str | None, force: bool, use_tracer: bool, **knobs: Any) -> None:
    """Print or write the op trace of one forward pass."""
    from simulator.report.files import check_out_file, format_for_path

    if out is not None:
        check_out_file(out, force)
    fmt = format_for_path(out, fmt) if out is not None else fmt or "table"
    spec = load_model(model)
    workload = make_workload(knobs)
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
