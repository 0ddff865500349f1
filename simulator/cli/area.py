"""``accelsim area``: area and static power of a hardware by component (see simulator.energy.action_costs)."""

from __future__ import annotations

import click

from simulator.cli.options import StrictCommand
from workloads.errors import InputError


@click.command(cls=StrictCommand)
@click.argument("hardware_name", metavar="HARDWARE")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of the table.")
def area(hardware_name: str, as_json: bool) -> None:
    """Area (mm2) and static power (mW) of HARDWARE (a preset name or YAML path) by component."""
    import json

    from simulator.report.energy import area_summary, format_area
    from simulator.spec.hardware import load_hardware

    hardware = load_hardware(hardware_name)
    summary = area_summary(hardware)
    if summary is None:
        raise InputError(f"hardware {hardware.name} has no energy section: area is not modelled")
    click.echo(json.dumps({"hardware": hardware.name, **summary}, indent=2) if as_json
               else format_area(hardware, summary))
