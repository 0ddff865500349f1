"""A sweep's axes: the paths an axis may name (a hardware field or table key, a model knob, an attention
setting, a system's ``chips``, a degree of the parallel plan, a serving sweep's ``rate``), and a design
point's hardware, system, parallel plan and configs (read by the evaluation, which runs in workers)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from simulator.formats.precision import parse_precision
from simulator.spec.config_io import unknown_name_message
from simulator.spec.hardware import Hardware
from simulator.spec.run_config import AttentionKernelConfig
from simulator.spec.system import ParallelPlan, System, system_with_chips
from workloads.errors import InputError
from workloads.knobs import KNOBS
from workloads.vocabulary import SFU_OPS

WORKLOAD_AXES = (*(knob.name for knob in KNOBS if knob.axis), "new_tokens")


def _check_sfu_op(name: str) -> None:
    if name not in SFU_OPS:
        raise InputError(unknown_name_message(name, SFU_OPS, "SFU op"))


# How a sweep axis's key inside each hardware table is checked (every table has an entry).
TABLE_KEYS: dict[str, Callable[[str], object]] = {
    "sfu.cycles_per_element": _check_sfu_op,
    "macs_per_pe": parse_precision,  # any precision may be added to the table
}


def check_axis_path(path: str) -> None:
    """An axis must name a hardware field (``array.rows``), a key of a table (``macs_per_pe.int8``), a
    workload knob of the models (``model.batch``), an attention kernel setting of every config
    (``attention.kernel``), a system's ``chips`` or a degree of the parallel plan (``parallel.tp``)."""
    if path in ("chips", "rate") or _named_axis(path):
        return
    model: type[BaseModel] | None = Hardware
    parts = path.split(".")
    for depth, part in enumerate(parts):
        if model is None:
            raise InputError(f"axis {path!r}: {'.'.join(parts[:depth])} has no field {part!r}")
        field = model.model_fields.get(part)
        if field is None:
            raise InputError(f"axis {path!r}: hardware has no field {'.'.join(parts[:depth + 1])!r}")
        annotation = field.annotation
        if getattr(annotation, "__origin__", None) is dict:
            _check_table_key(path, parts, depth)
            return
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    if model is not None:
        raise InputError(f"axis {path!r}: {path} is a group of fields, name one of them")


def check_axis_values(path: str, values: list[Any]) -> None:
    """An axis's values are numbers, strings or flags, all of one kind (integers and floats mix), or null (the
    setting left unset, as ``attention.block_q: null`` leaves the block to the search); ``chips`` takes
    integers from 2 (a system's) and ``rate`` positive numbers (requests per second). Whether a value suits the field
    it sets is the design point's to say (an infeasible point is a row with its reason)."""
    def kind(value: Any) -> str:
        if isinstance(value, bool):
            return "flags"
        if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
            return "numbers"
        if isinstance(value, str):
            return "strings"
        raise InputError(f"axis {path!r}: {value!r} is not a value an axis takes (a number, a string, a flag or "
                         "null)")

    kinds = {kind(value) for value in values if value is not None}
    if len(kinds) > 1:
        raise InputError(f"axis {path!r}: its values mix {' and '.join(sorted(kinds))}: {values!r}")
    if path == "chips" and not all(isinstance(value, int) and not isinstance(value, bool) and value >= 2
                                   for value in values):
        raise InputError(f"axis 'chips' takes integers of 2 or more (a system's chips), got {values!r}")
    if path == "rate" and (kinds != {"numbers"} or not all(value is not None and value > 0 for value in values)):
        raise InputError(f"axis 'rate' takes positive numbers (requests per second), got {values!r}")


def _named_axis(path: str) -> bool:
    """Whether ``path`` is an attention, model or parallel axis (refused when it names nothing of those)."""
    for prefix, names in (("attention.", AttentionKernelConfig.model_fields), ("model.", WORKLOAD_AXES),
                          ("parallel.", ParallelPlan.model_fields)):
        if path.startswith(prefix):
            known = tuple(prefix + name for name in names)
            if path not in known:
                raise InputError(unknown_name_message(path, known, "axis"))
            return True
    return False


def _check_table_key(path: str, parts: list[str], depth: int) -> None:
    """An axis into a table (``macs_per_pe.int8``): exactly one key after the table, one the table takes."""
    if depth + 2 != len(parts):
        raise InputError(f"axis {path!r}: {'.'.join(parts[:depth + 1])} needs exactly one key after it")
    try:
        TABLE_KEYS[".".join(parts[:depth + 1])](parts[-1])
    except InputError as exc:
        raise InputError(f"axis {path!r}: {exc}") from None


def hardware_at(base: dict[str, Any], axis_values: dict[str, Any]) -> Hardware:
    data = json.loads(json.dumps(base))
    for path, value in axis_values.items():
        if path in ("chips", "rate") or path.startswith(("model.", "attention.", "parallel.")):
            continue
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return Hardware.model_validate(data)
    except Exception as exc:
        from simulator.spec.config_io import validation_message

        message = validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
        raise InputError(f"infeasible hardware: {message}") from None


def system_at(base: dict[str, Any] | None, axis_values: dict[str, Any]) -> System | None:
    """The point's system: the sweep's, with the ``chips`` axis applied (None: one chip)."""
    if base is None:
        return None
    system = System.model_validate(base)
    return system_with_chips(system, axis_values["chips"]) if "chips" in axis_values else system


def plan_at(parallel: ParallelPlan | None, config: dict[str, Any], axis_values: dict[str, Any]) -> ParallelPlan:
    """The point's parallel plan: its ``parallel.*`` axes, else the sweep's ``parallel``, else the config's."""
    plan = parallel or ParallelPlan.model_validate(config.get("parallel") or {})
    return plan.with_given(**{path.removeprefix("parallel."): value for path, value in axis_values.items()
                              if path.startswith("parallel.")})


def config_at(config: dict[str, Any], axis_values: dict[str, Any], attention_of: dict[str, Any] | None = None,
              ) -> dict[str, Any]:
    """A run config dump at a design point: its ``attention`` (or that of ``attention_of``, the config a
    baseline is compared with: comparisons compare formats, not kernels) with the point's attention axes."""
    attention = dict((attention_of or config).get("attention") or {})
    attention.update({path.removeprefix("attention."): value for path, value in axis_values.items()
                      if path.startswith("attention.")})
    return {**config, "attention": attention}
