"""Shared pieces of the command line: the workload options and a command class that refuses repeats."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from workloads.models import Workload
from workloads.ops import MAX_SIZE

if TYPE_CHECKING:
    from simulator.spec.mask_files import MaskProvider
    from simulator.spec.run_config import Policy


def positive_int() -> click.IntRange:
    return click.IntRange(min=1, max=MAX_SIZE)


def workload_options(func):
    """The workload knobs shared by every command that builds a trace."""
    options = [
        click.option("--model", "model", required=True,
                     help="Zoo name (see `accelsim models`) or path to a config.json."),
        click.option("--batch", type=positive_int(), default=1, show_default=True, help="Batch size."),
        click.option("--tokens", type=positive_int(), default=None,
                     help="Sequence length in tokens (text; wav2vec2: frames). Default 384 for text models."),
        click.option("--decoder-tokens", type=positive_int(), default=None,
                     help="Decoder length of encoder-decoder models (default: --tokens)."),
        click.option("--image-size", type=positive_int(), default=None,
                     help="ViT image side in pixels (default: config's)."),
        click.option("--audio-samples", type=positive_int(), default=None,
                     help="wav2vec2 input length in 16 kHz samples (default 224000 = 699 frames)."),
        click.option("--head", default=None,
                     help="Task head: qa, pooler, classifier, ctc, lm or none (model dependent)."),
        click.option("--phase", type=click.Choice(["prefill", "decode"]), default=None,
                     help="Models with a decoder: prefill of --tokens (default), or one decode step with a cache "
                          "of --tokens (encoder-decoders: of --decoder-tokens, after a source of --tokens)."),
        expert_imbalance_option(),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def expert_imbalance_option():
    return click.option("--expert-imbalance", type=float, default=None,
                        help="Mixture-of-experts models: the busiest expert's tokens over the mean (1 = even, "
                             "the default).")


def make_workload(batch: int, tokens: int | None, decoder_tokens: int | None, image_size: int | None,
                  audio_samples: int | None, head: str | None, phase: str | None,
                  expert_imbalance: float | None) -> Workload:
    return Workload(batch=batch, tokens=tokens, image_size=image_size, audio_samples=audio_samples,
                    head=head, phase=phase, decoder_tokens=decoder_tokens, expert_imbalance=expert_imbalance)


class StrictCommand(click.Command):
    """A command that refuses an option given twice (click would silently keep the last value)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        _, _, order = self.make_parser(ctx).parse_args(args=list(args))
        seen: set[str] = set()
        for param in order:
            if isinstance(param, click.Option) and not param.multiple and not param.count:
                if param.name in seen:
                    raise click.UsageError(f"{param.opts[0]} is given more than once", ctx)
                seen.add(param.name)
        return super().parse_args(ctx, args)


class StrictGroup(click.Group):
    command_class = StrictCommand


def given(ctx: click.Context, name: str) -> bool:
    """Whether the user set option ``name`` (on the command line or through the environment)."""
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def mask_provider(policy: Policy) -> MaskProvider | None:
    """The weight masks a run config's sparsity needs (unstructured, or N:M timed through masks), or None."""
    weights = policy.config.sparsity.weights
    if weights is None or not weights.uses_masks:
        return None
    from simulator.spec.mask_files import MaskProvider

    return MaskProvider(weights, policy.source.parent if policy.source else None)
