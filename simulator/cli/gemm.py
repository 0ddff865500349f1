"""``accelsim gemm``: one product's compute cycles on a generic array (see gemm_cases for --cases)."""

from __future__ import annotations

import click

from simulator.cli.gemm_cases import GENERIC_MACS_PER_PE, gemm_result, read_cases
from simulator.cli.options import StrictCommand, given
from workloads.errors import InputError


@click.command(cls=StrictCommand)
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
    if missing or m is None or k is None or n is None or rows is None or cols is None:
        raise InputError(f"missing option(s) {', '.join(missing)} (or give --cases FILE.csv)")
    result = gemm_result(m, k, n, rows, cols, dataflow, precision, sparsity, timing)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"compute_cycles={result['compute_cycles']} utilization={result['utilization']:.4f} "
                   f"folds={result['folds']} ({result['timing']} timing, {precision}, {result['sparsity']})")
