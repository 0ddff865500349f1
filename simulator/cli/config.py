"""``accelsim config --from-checkpoint DIR``: the run config a checkpoint's own recipe derives, as YAML."""

from __future__ import annotations

import click

from simulator.cli.options import StrictCommand


@click.command(cls=StrictCommand)
@click.option("--from-checkpoint", "directory", required=True, type=click.Path(),
              help="A checkpoint directory (config.json, optionally safetensors weights).")
@click.option("--hardware", "hardware_name", required=True, help="Preset name or YAML path the config runs on.")
def config(directory: str, hardware_name: str) -> None:
    """Print the run config that `run checkpoint --model DIR` derives, with where each decision came from;
    `run` accepts it as a file and gives the same numbers."""
    import yaml

    from simulator.spec.checkpoint import checkpoint_run

    derived = checkpoint_run(directory, hardware_name)
    click.echo("\n".join(f"# {source.removeprefix('checkpoint: ')}" for source in derived.sources))
    click.echo(yaml.safe_dump(derived.config, sort_keys=False), nl=False)
