"""Shared pieces of the command line: the workload options and a command class that refuses repeats."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from workloads.knobs import BY_NAME, KNOB_NAMES, KNOBS
from workloads.models import Workload
from workloads.ops import MAX_SIZE

if TYPE_CHECKING:
    from simulator.spec.hardware import Hardware
    from simulator.spec.run_config import Policy
    from simulator.spec.system import ParallelPlan


def positive_int() -> click.IntRange:
    return click.IntRange(min=1, max=MAX_SIZE)


def workload_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The model and the workload knobs (workloads/knobs.py), shared by every command that builds a trace."""
    options: list[Callable[[Any], Any]] = [click.option("--model", "model", required=True,
                            help="Zoo name (see `accelsim models`) or path to a config.json."),
               *(knob_option(knob.name) for knob in KNOBS)]
    for option in reversed(options):
        func = option(func)
    return func


def knob_option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The command-line option of the workload knob ``name``."""
    knob = BY_NAME[name]
    kind: Any = (click.Choice(knob.choices) if knob.choices else positive_int() if knob.kind is int
                 else knob.kind)
    return click.option(knob.flag, knob.name, type=kind, default=knob.default, show_default=knob.default is not None,
                        help=knob.help)


def make_workload(knobs: dict[str, Any]) -> Workload:
    """The workload of a command's knob options (every option named in workloads/knobs.py)."""
    return Workload(**{name: knobs[name] for name in KNOB_NAMES})


def parallel_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--hardware (a chip or a system of chips) and the parallel plan over a system's chips (docs/systems.md);
    a degree not given is the run config's (``parallel:``), else 1."""
    for option in reversed((
            click.option("--hardware", "hardware_name", default=None,
                         help="Chip or system preset name, or YAML path (overrides the config's)."),
            click.option("--tp", type=positive_int(), default=None,
                         help="Tensor-parallel degree: chips splitting every product's heads and features."),
            click.option("--ep", type=positive_int(), default=None,
                         help="Expert-parallel degree: chips splitting a mixture of experts' experts (each takes "
                              "batch / ep of the sequences)."),
            click.option("--pp", type=positive_int(), default=None,
                         help="Pipeline stages: the blocks split into this many stages, each on tp x ep chips."))):
        func = option(func)
    return func


def chosen_plan(policy: Policy, **given: int | None) -> ParallelPlan:
    """The parallel plan of a run: the degrees ``given`` on the command line, else the run config's."""
    from simulator.spec.system import ParallelPlan

    return (policy.config.parallel or ParallelPlan()).with_given(**given)


def format_options(choices: tuple[str, ...], help_text: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--format`` (default table) and ``--json``, the same as ``--format json``; the command reads the
    chosen format with :func:`chosen_format`."""
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option("--json", "as_json", is_flag=True, help="The same as --format json.")(func)
        return click.option("--format", "fmt", type=click.Choice(choices), default=None,
                            help=f"{help_text} [default: table]".strip())(func)
    return decorate


def chosen_format(fmt: str | None, as_json: bool) -> str:
    """The output format of ``--format``/``--json`` (refusing the two when they disagree)."""
    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json contradicts --format {fmt}")
    return "json" if as_json else fmt or "table"


def load_policy(config: str, model: str, hardware: str | None) -> tuple[Policy, tuple[str, ...]]:
    """The run config ``config`` names, or (``checkpoint``) the one the checkpoint directory ``model`` derives
    on ``hardware``; with the notes saying where a derived config's decisions came from."""
    from simulator.spec.checkpoint import CHECKPOINT, checkpoint_run
    from simulator.spec.run_config import load_references, load_run_config

    if config != CHECKPOINT:
        policy = load_run_config(config)
        load_references(policy)
        return policy, ()
    if hardware is None:
        raise click.UsageError("the checkpoint config needs --hardware (a checkpoint does not name a chip)")
    derived = checkpoint_run(model, hardware)
    return derived.policy, derived.sources


_OUTPUTS = ("out", "json_path")  # the options naming what a command writes (--force replaces it)


class StrictCommand(click.Command):
    """A command that refuses an option given twice (click would silently keep the last value), an empty
    value (which a command would read as the option left out, or as the current directory) and ``--force``
    with nothing to write."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given, _, order = self.make_parser(ctx).parse_args(args=list(args))
        seen: set[str] = set()
        for param in order:
            if isinstance(param, click.Option) and not param.multiple and not param.count:
                if param.name in seen:
                    raise click.UsageError(f"{param.opts[0]} is given more than once", ctx)
                seen.add(param.name)
            value = given.get(param.name)  # no option takes several values
            if isinstance(value, str) and not value.strip():
                name = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
                raise click.UsageError(f"{name} is empty", ctx)
        outputs = [param for param in self.params if param.name in _OUTPUTS]
        if given.get("force") and outputs and not any(given.get(param.name) for param in outputs):
            named = " or ".join(param.opts[0] for param in outputs)
            raise click.UsageError(f"--force applies only with {named}", ctx)
        return super().parse_args(ctx, args)


class StrictGroup(click.Group):
    command_class = StrictCommand


def given(ctx: click.Context, name: str) -> bool:
    """Whether the user set option ``name`` (on the command line or through the environment)."""
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def silicon_accuracy(hardware: Hardware, phases: list[str]) -> str:
    """The summary line saying whether ``hardware`` is validated on silicon, and how well, for ``phases``."""
    from simulator.analysis.validation import accuracy_line
    from simulator.spec.silicon import measured_silicon

    return accuracy_line(hardware, measured_silicon(), phases)
