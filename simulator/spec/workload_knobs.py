"""The workload knobs of a model entry in a YAML file (sweeps, the paper's setup): a pydantic schema made
from the knob table (workloads/knobs.py), with the command line's limits."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model

from simulator.spec.config_io import StrictModel
from workloads.knobs import KNOB_NAMES, KNOBS, Knob
from workloads.models import Workload
from workloads.ops import MAX_SIZE


class _KnobFields(StrictModel):
    def workload(self) -> Workload:
        return Workload(**self.model_dump(include=set(KNOB_NAMES)))


def _field(knob: Knob) -> tuple[Any, Any]:
    if knob.kind is int:
        kind: Any = int if knob.default is not None else int | None
        return kind, Field(knob.default, gt=0, le=MAX_SIZE)
    if knob.kind is float:
        return float | None, Field(None, ge=knob.minimum, allow_inf_nan=False)
    if knob.choices:
        return Literal[knob.choices] | None, None
    return str | None, None


# A model's workload knobs (the CLI's --batch, --tokens, ...); None: the family's default.
WorkloadKnobs: type[_KnobFields] = create_model(  # type: ignore[call-overload]
    "WorkloadKnobs", __base__=_KnobFields, __doc__="A model's workload knobs in a YAML file; None: the default.",
    **{knob.name: _field(knob) for knob in KNOBS})
