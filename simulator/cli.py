"""The ``accelsim`` command line. Bad input: one line on stderr and exit 2; internal errors: exit 1."""

from __future__ import annotations

import sys
import traceback

import click

from simulator.output import TRACE_FORMATS, trace_bytes, write_bytes_atomic
from workloads.errors import InputError
from workloads.models import Workload, load_model, zoo_names

EXIT_USAGE = 2
EXIT_INTERNAL = 1


def _positive_int() -> click.IntRange:
    return click.IntRange(min=1)


def workload_options(func):  # noqa: ANN001, ANN201 - click decorator
    """The workload knobs shared by every command that builds a trace."""
    options = [
        click.option("--model", "model", required=True,
                     help="Zoo name (see `accelsim models`) or path to a config.json."),
        click.option("--batch", type=_positive_int(), default=1, show_default=True, help="Batch size."),
        click.option("--tokens", type=_positive_int(), default=None,
                     help="Sequence length in tokens (text; wav2vec2: frames). Default 384 for text models."),
        click.option("--decoder-tokens", type=_positive_int(), default=None,
                     help="Decoder length of encoder-decoder models (default: --tokens)."),
        click.option("--image-size", type=_positive_int(), default=None,
                     help="ViT image side in pixels (default: config's)."),
        click.option("--audio-samples", type=_positive_int(), default=None,
                     help="wav2vec2 input length in 16 kHz samples (default 224000 = 699 frames)."),
        click.option("--head", default=None,
                     help="Task head: qa, pooler, classifier, ctc, lm or none (model dependent)."),
        click.option("--phase", type=click.Choice(["prefill", "decode"]), default="prefill", show_default=True,
                     help="Decoder-only models: prefill of --tokens, or one decode step with a cache of --tokens."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def make_workload(batch: int, tokens: int | None, decoder_tokens: int | None, image_size: int | None,
                  audio_samples: int | None, head: str | None, phase: str) -> Workload:
    return Workload(batch=batch, tokens=tokens, image_size=image_size, audio_samples=audio_samples,
                    head=head, phase=phase, decoder_tokens=decoder_tokens)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """accelsim: systolic-array accelerator simulator for transformer inference."""
    ctx.obj = {"debug": debug}


@cli.command()
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


@cli.command()
@workload_options
@click.option("--format", "fmt", type=click.Choice(TRACE_FORMATS), default="table", show_default=True)
@click.option("--out", type=click.Path(), default=None, help="Write to FILE (atomically) instead of stdout.")
@click.option("--trace", "use_tracer", is_flag=True,
              help="Trace the real transformers model on the meta device instead (needs the hf extra).")
def extract(model: str, batch: int, tokens: int | None, decoder_tokens: int | None, image_size: int | None,
            audio_samples: int | None, head: str | None, phase: str, fmt: str, out: str | None,
            use_tracer: bool) -> None:
    """Print or write the op trace of one forward pass."""
    spec = load_model(model)
    workload = make_workload(batch, tokens, decoder_tokens, image_size, audio_samples, head, phase)
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
    except InputError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"accelsim: error: {_one_line(str(exc))}", err=True)
        sys.exit(EXIT_USAGE)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - the one place that reports unexpected failures
        if debug:
            traceback.print_exc()
        click.echo(f"accelsim: internal error: {exc.__class__.__name__}: {_one_line(str(exc))} "
                   "(rerun with --debug for the traceback)", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)


if __name__ == "__main__":
    main()
