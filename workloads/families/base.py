"""What every model family shares: the workload knobs, the Family interface and small helpers.

A family turns a Hugging Face-style config and a workload into ops, in the order the Hugging Face eager
implementation runs them (checked by the tracing tests). One module per family under this package;
the registry that maps ``model_type`` to families is :mod:`workloads.models`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from workloads.builder import OpBuilder
from workloads.errors import InputError
from workloads.families.config_keys import OptionalKeys, check_size
from workloads.knobs import FAMILY_KNOBS, OPTIONAL_SIZES
from workloads.ops import MAX_SIZE
from workloads.parallel import ExpertParallel, PipelineStage, TensorParallel

PHASES = ("prefill", "decode")
COMMON_KEYS = OptionalKeys(sizes=("num_labels",))  # Hugging Face's, in every config (a classifier's outputs)


# What a family hands transformers: the forward call's keyword inputs, and a callable that runs it (or None).
HfInputs = tuple[dict[str, Any], Callable[..., Any] | None]


@dataclass(frozen=True)
class Workload:
    """Workload knobs. ``None`` means the family's default (see ``Family.resolve``)."""

    batch: int = 1
    tokens: int | None = None  # text tokens; for wav2vec2 the frame count
    image_size: int | None = None  # ViT, pixels per side
    audio_samples: int | None = None  # wav2vec2, 16 kHz samples
    head: str | None = None
    phase: str | None = None  # models with a decoder: a prefill (default), or one decode step after it
    decoder_tokens: int | None = None  # encoder-decoder models; defaults to `tokens`
    logits_to_keep: int | None = None  # decoder LM heads: run the head on the last N positions only (generate())
    expert_imbalance: float | None = None  # mixture of experts: busiest expert's load / mean load (1: even)
    tp: int | None = None  # tensor parallelism: chips splitting the model (workloads.parallel; None: one chip)
    ep: int | None = None  # expert parallelism: chips splitting the experts (workloads.parallel; None: one chip)
    pp: int | None = None  # pipeline parallelism: stages the blocks are split into (None: one)
    stage: int | None = None  # with pp: which stage this pass is (0 = the first)

    def size(self, knob: str) -> int:
        """A size knob as a family's build reads it, filled by ``Family.resolve`` (an error before)."""
        value = getattr(self, knob)
        if not isinstance(value, int):
            raise AssertionError(f"{knob} is read before the family resolved it")
        return value

    def as_dict(self) -> dict[str, int | str]:
        return {k: v for k, v in asdict(self).items() if v is not None}


OPTIONAL_KNOBS = OPTIONAL_SIZES


def flag(name: str) -> str:
    """The command-line spelling of a Workload knob."""
    return "--" + name.replace("_", "-")


def positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    if value is not None and value > MAX_SIZE:
        raise InputError(f"{name} = {value} exceeds the largest accepted size {MAX_SIZE} (31 bits)")


class Family:
    """How one ``model_type`` turns a config and a workload into ops."""

    model_types: tuple[str, ...] = ()
    required: tuple[str, ...] = ()  # sizes
    required_lists: tuple[str, ...] = ()  # of the required keys, those that hold a list of sizes (not empty)
    optional = OptionalKeys()  # the optional keys it reads (config_keys)
    heads: tuple[str, ...] = ("none",)  # the first is the default
    hf_classes: Mapping[str, str] = {}
    default_tokens: int | None = 384  # text families; None where tokens derive from other knobs
    knobs: tuple[str, ...] = ("tokens",)  # optional Workload knobs (besides batch and head) that apply
    phases: tuple[str, ...] = ()  # generation phases, the first the default; () = one forward pass only
    cache_knob = "tokens"  # the knob a decode step's self-attention cache length is (decoder_tokens: enc-dec)
    tensor_parallel = False  # whether the family splits over chips (workloads.parallel)
    expert_parallel = False  # whether it splits its experts over chips
    pipeline_parallel = False  # whether it splits its blocks into pipeline stages
    mixed_batches = False  # whether it builds a serving iteration's mixed batch (build_mixed)

    def blocks_alike(self, cfg: Mapping[str, Any]) -> bool:
        """Whether every block of a model of ``cfg`` is built alike (serving then probes a copy with fewer
        blocks): the same ops on the same sizes, in a family that numbers its blocks ``layers.<i>`` and counts
        them in ``num_hidden_layers``."""
        return False

    def check(self, cfg: Mapping[str, Any], where: str) -> None:
        missing = [k for k in self.required if k not in cfg]
        if missing:
            raise InputError(f"{where}: missing key(s) {', '.join(missing)} for model_type {cfg['model_type']!r}")
        for key in self.required:
            value = cfg[key]
            if key not in self.required_lists:
                check_size(key, value, where)
            elif not isinstance(value, list) or not value:
                raise InputError(f"{where}: key {key!r} must list one size or more, got {value!r}")
            else:
                for item in value:
                    check_size(key, item, where)
        self.optional.check(cfg, where)
        COMMON_KEYS.check(cfg, where)

    def resolve(self, cfg: Mapping[str, Any], wl: Workload) -> Workload:
        """Fill defaults and validate the workload against the config; refuse knobs that do not apply."""
        for name in ("batch", *OPTIONAL_KNOBS):
            positive(flag(name), getattr(wl, name))
        model_type = cfg["model_type"]
        # the model's knobs by name, not as one command's options (`generate` spells tokens --prompt)
        takes = ", ".join(("batch", "head", *self.knobs, *(["phase"] if self.phases else [])))
        for name in FAMILY_KNOBS:
            if getattr(wl, name) is not None and name not in self.knobs:
                raise InputError(f"{flag(name)} does not apply to {model_type} models (their workload knobs: {takes})")
        head = wl.head or self.heads[0]
        if head not in self.heads:
            raise InputError(f"head {head!r} is not available for {model_type}; "
                             f"choose from {', '.join(self.heads)}")
        if wl.phase is not None and wl.phase not in PHASES:
            raise InputError(f"phase {wl.phase!r} is unknown; choose from {', '.join(PHASES)}")
        if wl.phase is not None and wl.phase not in self.phases:
            raise InputError(f"--phase {wl.phase} does not apply to {model_type} models: they run one forward "
                             f"pass, without generation phases (their workload knobs: {takes})")
        phase = wl.phase or (self.phases[0] if self.phases else None)
        positive("logits_to_keep", wl.logits_to_keep)
        if wl.logits_to_keep is not None and (not self.phases or head != "lm"):
            raise InputError(f"logits_to_keep applies to decoder models with an LM head, not to {model_type} "
                             f"with head {head!r}")
        tokens = wl.tokens if wl.tokens is not None or self.default_tokens is None else self.default_tokens
        tp, ep = self._parallel_plan(wl, model_type)
        stage = self._stage(wl, model_type)
        return replace(wl, head=head, tokens=tokens, phase=phase, tp=tp.degree if tp.split else None,
                       ep=ep.degree if ep.split else None, pp=stage.stages if stage.stages > 1 else None,
                       stage=stage.index if stage.stages > 1 else None)

    def _stage(self, wl: Workload, model_type: str) -> PipelineStage:
        """The pipeline stage a pass is (the whole model without --pp)."""
        stages = 1 if wl.pp is None else wl.pp
        if stages == 1 and wl.stage not in (None, 0):
            raise InputError(f"stage {wl.stage} needs a pipeline (--pp)")
        stage = PipelineStage(stages, wl.stage or 0)
        if stages > 1 and not self.pipeline_parallel:
            raise InputError(f"--pp does not apply to {model_type} models (pipeline stages split Llama-style "
                             "decoders: llama, qwen2, mistral, mixtral)")
        if stages > 1 and wl.stage is None:
            raise InputError(f"--pp {stages}: a pass is one stage's; say which (stage 0 to {stages - 1})")
        return stage

    def _parallel_plan(self, wl: Workload, model_type: str) -> tuple[TensorParallel, ExpertParallel]:
        """The workload's split over chips (workloads.parallel), refused where the family does not split so."""
        tp = TensorParallel(1 if wl.tp is None else wl.tp)
        if tp.split and not self.tensor_parallel:
            raise InputError(f"--tp does not apply to {model_type} models (tensor parallelism splits Llama-style "
                             "decoders: llama, qwen2, mistral, mixtral)")
        ep = ExpertParallel(1 if wl.ep is None else wl.ep)
        if ep.split and not self.expert_parallel:
            raise InputError(f"--ep does not apply to {model_type} models: they have no experts to split")
        if ep.split and tp.split:
            raise InputError("--tp with --ep is not modelled: split a mixture of experts over its experts or "
                             "over its heads and features, not both")
        ep.sequences(wl.batch)
        return tp, ep

    def hf_class(self, cfg: Mapping[str, Any], head: str) -> str:
        """The transformers class that runs this family with ``head``."""
        return self.hf_classes[head]

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        raise NotImplementedError

    def build_mixed(self, cfg: Mapping[str, Any], batch: Any, b: OpBuilder, tp: int | None = None) -> None:
        """One serving iteration of a :class:`workloads.mixed.MixedBatch` (decoder families that serve), one
        chip's of ``tp``."""
        raise InputError(f"{cfg['model_type']} models do not run mixed batches of sequences")

    def build_attention(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        """The first block's self-attention of :meth:`build`'s pass, alone (families whose blocks serving
        probes apart)."""
        raise NotImplementedError

    def build_mixed_attention(self, cfg: Mapping[str, Any], batch: Any, b: OpBuilder, tp: int | None = None) -> None:
        """The first block's self-attention of :meth:`build_mixed`'s pass, alone."""
        raise NotImplementedError

    def build_head(self, cfg: Mapping[str, Any], tokens: int, emitting: int, b: OpBuilder,
                   tp: int | None = None) -> None:
        """The final norm and LM head of :meth:`build_mixed`'s pass, alone."""
        raise NotImplementedError

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> HfInputs:
        ids = torch.zeros(wl.batch, wl.size("tokens"), dtype=torch.long, device="meta")
        return {"input_ids": ids}, None

    def hf_non_trace_params(self, cfg: Mapping[str, Any]) -> int:
        """Parameters Hugging Face counts that are not learned (fixed tables computed at load time)."""
        return 0


def heads_divide(cfg: Mapping[str, Any], hidden_key: str, heads_key: str) -> int:
    hidden, heads = cfg[hidden_key], cfg[heads_key]
    if hidden % heads:
        raise InputError(f"{heads_key}={heads} does not divide {hidden_key}={hidden}")
    return int(hidden // heads)


def encoder_decoder_inputs(wl: Workload, torch: Any) -> HfInputs:
    """An encoder-decoder model's inputs: the source and the decoder tokens (prefill), or one new decoder
    token after a prefill of both has filled the self- and cross-attention caches (decode)."""
    def ids(length: int) -> Any:
        return torch.zeros(wl.batch, length, dtype=torch.long, device="meta")

    first = {"input_ids": ids(wl.size("tokens")), "decoder_input_ids": ids(wl.size("decoder_tokens"))}
    if wl.phase != "decode":
        return first, None

    def prefill(model: Any, _inputs: dict[str, Any]) -> dict[str, Any]:
        out = model(**first, use_cache=True)
        return {"encoder_outputs": (out.encoder_last_hidden_state,), "decoder_input_ids": ids(1),
                "past_key_values": out.past_key_values, "use_cache": True}

    return {}, prefill


def check_context(wl: Workload, positions: int, key: str) -> None:
    """A decoder's context (the tokens, plus the new one in a decode step) within its positions."""
    context = wl.size("tokens") + (1 if wl.phase == "decode" else 0)
    if context > positions:
        raise InputError(f"a context of {context} tokens exceeds the model's {positions} positions ({key})")


def head_rows(wl: Workload, batch_rows: int, new: int) -> int:
    """Rows an LM head computes: every new position, or the last ``logits_to_keep`` of each sequence."""
    return batch_rows if wl.logits_to_keep is None else wl.batch * min(wl.logits_to_keep, new)


def causal_lm_inputs(wl: Workload, torch: Any) -> HfInputs:
    """A decoder-only model's inputs: the prompt (prefill), or one new token after a prefill of the prompt
    has filled the KV cache (decode)."""
    prompt = torch.zeros(wl.batch, wl.size("tokens"), dtype=torch.long, device="meta")
    if wl.phase == "prefill":
        keep = {"logits_to_keep": wl.logits_to_keep} if wl.logits_to_keep else {}
        return {"input_ids": prompt, **keep}, None

    def prefill(model: Any, _inputs: dict[str, Any]) -> dict[str, Any]:
        cache = model(input_ids=prompt, use_cache=True).past_key_values
        step = torch.zeros(wl.batch, 1, dtype=torch.long, device="meta")
        return {"input_ids": step, "past_key_values": cache, "use_cache": True}

    return {}, prefill
