"""The model registry: ``model_type`` -> family, model specs, the zoo, and loading a config.

Supported ``model_type`` values with a closed form: bert, roberta, vit, wav2vec2, gpt2, t5, fsmt, llama,
qwen2, mistral, mixtral, opt (one module per family under :mod:`workloads.families`); any other type transformers knows
can be traced.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from workloads.builder import OpBuilder
from workloads.errors import InputError, json_object
from workloads.families.base import PHASES, Family, HfInputs, Workload
from workloads.families.bert import BertFamily
from workloads.families.fsmt import FSMTFamily
from workloads.families.gpt2 import GPT2Family
from workloads.families.llama import LlamaFamily
from workloads.families.mixtral import MixtralFamily
from workloads.families.opt import OPTFamily
from workloads.families.t5 import T5Family
from workloads.families.traced_only import TracedOnlyFamily
from workloads.families.vit import ViTFamily
from workloads.families.wav2vec2 import Wav2Vec2Family
from workloads.mixed import MixedBatch
from workloads.ops import Trace

__all__ = ["FAMILIES", "PHASES", "Family", "ModelSpec", "Workload", "load_model", "parse_config", "zoo_names"]

FAMILIES: dict[str, Family] = {}
for _family in (BertFamily(), ViTFamily(), Wav2Vec2Family(), GPT2Family(), T5Family(), FSMTFamily(),
                LlamaFamily(), MixtralFamily(), OPTFamily()):
    for _model_type in _family.model_types:
        FAMILIES[_model_type] = _family
TRACED_ONLY = TracedOnlyFamily(tuple(sorted(FAMILIES)))


@dataclass(frozen=True)
class ModelSpec:
    """A model config (Hugging Face ``config.json`` contents) and the family that interprets it."""

    name: str
    config: Mapping[str, Any]
    tp: int | None = None  # every trace of this spec is one chip's of tp (serving over a system's chips)

    @property
    def family(self) -> Family:
        return FAMILIES.get(self.config["model_type"], TRACED_ONLY)

    @property
    def has_closed_form(self) -> bool:
        return self.config["model_type"] in FAMILIES

    def resolve(self, workload: Workload) -> Workload:
        return self.family.resolve(self.config, replace(workload, tp=self.tp) if self.tp else workload)

    def trace(self, workload: Workload | None = None) -> Trace:
        """The closed-form op trace of one forward pass."""
        wl = self.resolve(workload or Workload())
        b = OpBuilder()
        self.family.build(self.config, wl, b)
        return b.build_trace(self.name, _chip_workload(wl),
                             lambda batch: self.trace(replace(wl, batch=batch * (wl.ep or 1))))

    def mixed_trace(self, batch: MixedBatch, as_mixed: bool = False) -> Trace:
        """The op trace of one serving iteration: the ``generate`` workload it is, when it is one (see
        :meth:`MixedBatch.uniform`) and not built ``as_mixed``, else the family's mixed batch."""
        uniform = None if as_mixed else batch.uniform()
        if uniform is not None:
            return self.trace(uniform)
        b = OpBuilder()
        self.family.build_mixed(self.config, batch, b, self.tp)
        return b.build_trace(self.name, self._mixed_workload(batch))

    def _mixed_workload(self, batch: MixedBatch) -> dict[str, int | str]:
        return self._pass_record(len(batch.sequences), batch.tokens)

    def _pass_record(self, sequences: int, tokens: int) -> dict[str, int | str]:
        """The workload record of a serving pass (or a part of one) of ``sequences`` and ``tokens`` new tokens."""
        return {"batch": sequences, "tokens": tokens, "phase": "mixed", **({"tp": self.tp} if self.tp else {})}

    def attention_trace(self, batch: MixedBatch, as_mixed: bool = False) -> Trace:
        """The first block's self-attention of :meth:`mixed_trace`'s pass, alone (a Llama-style decoder's):
        what serving probes kinds of sequence on."""
        uniform = None if as_mixed else batch.uniform()
        b = OpBuilder()
        if uniform is not None:
            wl = self.resolve(uniform)
            self.family.build_attention(self.config, wl, b)
            return b.build_trace(self.name, _chip_workload(wl))
        self.family.build_mixed_attention(self.config, batch, b, self.tp)
        return b.build_trace(self.name, self._mixed_workload(batch))

    def head_trace(self, tokens: int, emitting: int) -> Trace:
        """The end of :meth:`mixed_trace`'s pass for ``tokens`` new tokens of which ``emitting`` emit, alone: what
        serving probes heads on."""
        b = OpBuilder()
        self.family.build_head(self.config, tokens, emitting, b, self.tp)
        return b.build_trace(self.name, self._pass_record(max(emitting, 1), tokens))

    def hf_class(self, head: str) -> str:
        return self.family.hf_class(self.config, head)

    def hf_inputs(self, workload: Workload, torch: Any) -> HfInputs:
        return self.family.hf_inputs(self.config, workload, torch)


def _chip_workload(wl: Workload) -> dict[str, Any]:
    """A trace's workload record: split over experts, a chip runs batch / ep of the sequences (its KV
    cache's batch)."""
    return {**wl.as_dict(), "batch": wl.batch // (wl.ep or 1)}


def zoo_names() -> list[str]:
    folder = resources.files("workloads") / "zoo"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def parse_config(text: str, where: str) -> dict[str, Any]:
    cfg = json_object(text, where)
    if "model_type" not in cfg:
        raise InputError(f"{where}: missing key model_type")
    if not isinstance(cfg["model_type"], str):
        raise InputError(f"{where}: model_type must be a string")
    FAMILIES.get(cfg["model_type"], TRACED_ONLY).check(cfg, where)  # an unknown type can still be traced
    return cfg


def load_model(name_or_path: str) -> ModelSpec:
    """A zoo name (e.g. ``bert-base``) or a path to a ``config.json`` of a supported model type."""
    names = zoo_names()
    if name_or_path in names:
        text = (resources.files("workloads") / "zoo" / f"{name_or_path}.json").read_text()
        return ModelSpec(name_or_path, parse_config(text, name_or_path))
    path = Path(name_or_path)
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.is_file():
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read ({exc.__class__.__name__})") from None
        return ModelSpec(path.stem if path.name != "config.json" else path.parent.name or "model",
                         parse_config(text, str(path)))
    if path.is_dir():
        raise InputError(f"{path}: is a directory without a config.json")
    if path.exists():
        raise InputError(f"{path}: not a config.json file")
    close = difflib.get_close_matches(name_or_path, names, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(names)}"
    raise InputError(f"unknown model {name_or_path!r} (not a zoo name or an existing config.json){hint}")
