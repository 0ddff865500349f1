"""Model types without a closed form: traced only (``--trace``), through transformers' Auto classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workloads.builder import OpBuilder
from workloads.errors import InputError
from workloads.families.base import (
    Family,
    HfInputs,
    Workload,
)


class TracedOnlyFamily(Family):
    """A ``model_type`` accelsim has no closed form for: it can only be traced (``--trace``), as a text
    model fed ``tokens`` token ids, through transformers' Auto classes."""

    heads = ("none", "lm")

    def __init__(self, supported: tuple[str, ...] = ()) -> None:
        self.supported = supported  # the model types that have a closed form, for the message
    hf_classes = {"none": "AutoModel", "lm": "AutoModelForCausalLM"}

    def build(self, cfg: Mapping[str, Any], wl: Workload, b: OpBuilder) -> None:
        raise InputError(f"unsupported model_type {cfg['model_type']!r} for the closed form (supported: "
                         f"{', '.join(self.supported)}); add --trace to simulate the real transformers model "
                         "(hf extra)")

    def hf_inputs(self, cfg: Mapping[str, Any], wl: Workload, torch: Any) -> HfInputs:
        return {"input_ids": torch.zeros(wl.batch, wl.size("tokens"), dtype=torch.long, device="meta")}, None
