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
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of the table.")
def memory(config: str, model: str, head: str | None, as_json: bool) -> None:
    """Bit-exact parameter storage of MODEL under run CONFIG, by layer group and in total."""
    import json

    from simulator.formats.storage import mask_nonzeros
    from simulator.plan.binding import bind
    from simulator.report.summary import format_memory
    from simulator.spec.hardware import load_hardware
    from simulator.spec.run_config import load_references, load_run_config
    from simulator.spec.weight_masks import weight_masks

    policy = load_run_config(config)
    load_references(policy)
    trace = load_model(model).trace(Workload(head=head))
    masks = weight_masks(policy, trace)
    plan = bind(policy, load_hardware(policy.config.hardware))  # as the config's hardware stores them
    result = plan.footprint(trace, mask_nonzeros(masks) if masks else None)
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else format_memory(result))
