"""The ``accelsim`` command line: the command group, its commands, and the one place that turns every
failure into one line and an exit code (bad input: 2; internal errors: 1)."""

from __future__ import annotations

import sys
import traceback

import click

from simulator.cli.area import area
from simulator.cli.config import config
from simulator.cli.extract import extract
from simulator.cli.gemm import gemm
from simulator.cli.generate import generate
from simulator.cli.memory import memory
from simulator.cli.models import models
from simulator.cli.options import StrictGroup
from simulator.cli.reproduce import reproduce
from simulator.cli.run import run
from simulator.cli.serve import serve
from simulator.cli.sweep_command import sweep
from simulator.cli.validate import validate
from workloads.errors import InputError

EXIT_USAGE = 2
EXIT_INTERNAL = 1


@click.group(cls=StrictGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """accelsim: systolic-array accelerator simulator for transformer inference."""
    ctx.obj = {"debug": debug}


for command in (models, extract, gemm, run, memory, reproduce, sweep, generate, serve, area, config, validate):
    cli.add_command(command)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the click group and turns every failure into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="accelsim", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("accelsim: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors: bad option, missing argument, bad value
        click.echo(f"accelsim: error: {_one_line(exc.format_message())}", err=True)
        sys.exit(EXIT_USAGE)
    except (InputError, MemoryError) as exc:  # MemoryError: the run asks for more than the machine holds
        if debug:
            traceback.print_exc()
        message = str(exc) if isinstance(exc, InputError) else \
            f"not enough memory for this run ({_one_line(str(exc)) or 'MemoryError'}); ask for a smaller one"
        click.echo(f"accelsim: error: {_one_line(message)}", err=True)
        sys.exit(EXIT_USAGE)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"accelsim: internal error: {exc.__class__.__name__}: {_one_line(str(exc))} "
                   "(rerun with --debug for the traceback)", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)


if __name__ == "__main__":
    main()
