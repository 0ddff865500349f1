"""``accelsim memory``: bit-exact parameter storage of a model under a run config."""

from __future__ import annotations

import click

from simulator.cli.options import StrictCommand
from workloads.models import Workload, load_model


@click.command(cls=StrictCommand)
@click.argument("config", type=click.Path())
@click.option("--model", "model", required=True, help="Zoo name (see `accelsim models`) or path to a config.json.")
@click.option("--head", default=None,
              help="Task head whose parameters are included: qa, pooler, classifier, ctc, lm or none "
                   "(model dependent; default: the model's default head). Storage does not depend on the "
                   "batch, sequence or image size, so those knobs do not apply here.")
@click.option("--hardware", "hardware_name", default=None,
              help="A chip preset or YAML path that stores the weights, instead of the config's; the checkpoint "
                   "config needs it (the recipe it derives depends on the chip).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of the table.")
def memory(config: str, model: str, head: str | None, hardware_name: str | None, as_json: bool) -> None:
    """Bit-exact parameter storage of MODEL under run CONFIG (or ``checkpoint``: the recipe of the checkpoint
    directory MODEL), by layer group and in total."""
    import json

    from simulator.cli.options import load_policy
    from simulator.formats.storage import mask_nonzeros
    from simulator.plan.binding import bind
    from simulator.report.summary import format_memory
    from simulator.spec.hardware import load_hardware
    from simulator.spec.weight_masks import weight_masks

    policy, sources = load_policy(config, model, hardware_name)
    trace = load_model(model).trace(Workload(head=head))
    masks = weight_masks(policy, trace)
    plan = bind(policy, load_hardware(hardware_name or policy.config.hardware))  # as that chip stores them
    result = plan.footprint(trace, mask_nonzeros(masks) if masks else None)
    if as_json:
        click.echo(json.dumps({**result.as_dict(), **({"sources": list(sources)} if sources else {})}, indent=2))
    else:
        click.echo("\n".join([*sources, format_memory(result)]))
