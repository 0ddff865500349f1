"""``accelsim reproduce``: the paper's hardware figures next to the published values."""

from __future__ import annotations

import click

from simulator.cli.options import StrictCommand
from simulator.report.files import write_bytes_atomic


@click.command(cls=StrictCommand)
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
    from simulator.report.files import check_out_dir, check_out_file, staged_dir
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
