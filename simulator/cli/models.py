"""``accelsim models``: the built-in model zoo with parameter counts."""

from __future__ import annotations

import click

from simulator.cli.options import StrictCommand
from workloads.models import load_model, zoo_names


@click.command(cls=StrictCommand)
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
