"""The workload knobs, in one table: the command-line options, the YAML schema of a model entry (sweeps,
the paper's setup), the sweep axes ``model.<knob>`` and the sweep's result columns are made from it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Knob:
    """One field of ``Workload`` that a user sets."""

    name: str
    kind: type  # int (a positive size), float or str
    help: str
    default: int | None = None  # None: the family's default
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # floats: the smallest value accepted
    axis: bool = True  # a sweep may vary it (model.<name>)
    per_family: bool = False  # applies to some families only (refused, naming it, by the others)

    @property
    def flag(self) -> str:
        """The command-line spelling."""
        return "--" + self.name.replace("_", "-")


KNOBS = (
    Knob("batch", int, "Batch size.", default=1),
    Knob("tokens", int, "Sequence length in tokens (text; wav2vec2: frames). Default 384 for text models.",
         per_family=True),
    Knob("image_size", int, "ViT image side in pixels (default: config's).", per_family=True),
    Knob("audio_samples", int, "wav2vec2 input length in 16 kHz samples (default 224000 = 699 frames).",
         per_family=True),
    Knob("decoder_tokens", int, "Decoder length of encoder-decoder models (default: --tokens).", per_family=True),
    Knob("expert_imbalance", float, "Mixture-of-experts models: the busiest expert's tokens over the mean (1 = even, "
         "the default).", minimum=1.0, per_family=True),
    Knob("head", str, "Task head: qa, pooler, classifier, ctc, lm or none (model dependent).", axis=False),
    Knob("phase", str, "Models with a decoder: prefill of --tokens (default), or one decode step with a cache of "
         "--tokens (encoder-decoders: of --decoder-tokens, after a source of --tokens).",
         choices=("prefill", "decode"), axis=False),
)
KNOB_NAMES = tuple(knob.name for knob in KNOBS)
BY_NAME = {knob.name: knob for knob in KNOBS}
FAMILY_KNOBS = tuple(knob.name for knob in KNOBS if knob.per_family)  # the knobs a family may or may not take
OPTIONAL_SIZES = tuple(knob.name for knob in KNOBS if knob.per_family and knob.kind is int)  # positive integers
