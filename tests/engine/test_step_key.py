"""The engine's memo key (engine/step_key.py): every field of a step, its op and its tensors either
changes the key or cannot change the step's cost. A field the key forgot would let one step take
another's cost; this changes each field in turn and costs the changed step directly, past the memo."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import pytest

from simulator import Simulator, load_hardware, load_model, load_run_config
from simulator.engine.steps import Step
from simulator.formats.precision import parse_precision
from simulator.formats.sparsity import SparsityPattern
from workloads.models import Workload
from workloads.ops import Tensor

NAMING = {"name", "layer"}  # the record takes these from the step itself, after the memo
LINKS = {"reads", "writes", "source"}  # tensor names: changing one names another tensor (its own fields count)

CASES = [
    ("bert-base", Workload(tokens=16), "int4_sp", "rapid_like"),
    ("bert-base", Workload(tokens=16), "int8_sp_attn", "rapid_like"),
    ("gpt2", Workload(tokens=32, phase="decode"), "w4a16_g128_kv8", "tpu_v5e_like"),
    ("gpt2", Workload(tokens=32, phase="prefill"), "nvfp4", "tpu_v5e_like"),
]


def changed(value: Any, name: str) -> list[Any]:
    """Other values a field could take."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value * 2 + 3] if name not in ("nm_kept", "nm_group") else [value + 1]
    if isinstance(value, str):
        alternatives = {"kind": ["gemm", "bmm", "vector", "activation", "state", "weight", "input"],
                        "group": ["attention", "ffn", "embedding", "head"],
                        "role": ["q", "ffn1", "softmax", "bmm_qk", "embedding", "gelu", "layernorm"],
                        "operands": ["", "int4/fp16", "int8"]}.get(name, [value + "x"])
        return [a for a in alternatives if a != value]
    if value is None or isinstance(value, SparsityPattern):
        return [p for p in (None, SparsityPattern(2, 4), SparsityPattern(1, 4)) if p != value]
    if hasattr(value, "bits"):  # a precision
        return [parse_precision(p) for p in ("int8", "fp16", "int4") if parse_precision(p) != value]
    return []


def record_without_naming(record) -> dict:
    return {field.name: getattr(record, field.name) for field in fields(record)
            if field.name not in NAMING | {"fused_into"}}


def variants_of(step: Step, tensors: dict[str, Tensor]) -> list[tuple[str, Step, dict[str, Tensor]]]:
    """(label, step, tensors) with one field of the step, its op or one of its tensors changed."""
    variants: list[tuple[str, Step, dict[str, Tensor]]] = []
    for field in fields(step):
        if field.name not in LINKS | {"op", "unit", "stored_as"}:
            variants += [(f"step.{field.name}", replace(step, **{field.name: v}), tensors)
                         for v in changed(getattr(step, field.name), field.name)]
    for owner, label in [(step.op, "op"), *((tensors[name], name) for name in (*step.reads, *step.writes))]:
        for field in fields(owner):
            if field.name in LINKS | (NAMING if label != "op" else set()):
                continue
            for value in changed(getattr(owner, field.name), field.name):
                try:
                    new = replace(owner, **{field.name: value})
                except ValueError:
                    continue
                if label == "op":
                    variants.append((f"op.{field.name}", replace(step, op=new), tensors))
                else:
                    variants.append((f"{label}.{field.name}", step, {**tensors, label: new}))
    return variants


@pytest.mark.parametrize(("model", "workload", "config", "hardware"), CASES)
def test_every_field_changes_the_key_or_cannot_change_the_cost(model, workload, config, hardware):
    simulator = Simulator(load_hardware(hardware), load_run_config(config))
    prepared = simulator.prepare(load_model(model).trace(workload))
    steps = prepared.lowered.steps
    seen: set[tuple] = set()
    checked = 0
    for index, step in enumerate(steps):
        shape = (step.unit, step.inserted, step.op.role, step.op.kind)
        if shape in seen:
            continue  # one step of each kind: the repeated blocks add nothing
        seen.add(shape)
        key = simulator.step_key(prepared, index)
        if key is None:
            continue
        tensors = prepared.lowered.tensors
        fused = index in prepared.fused
        base = record_without_naming(simulator._step_record(step, tensors, prepared.placement,
                                                            prepared.weight_bytes, fused))
        variants = variants_of(step, tensors)
        for label, other, other_tensors in variants:
            try:
                cost = record_without_naming(simulator._step_record(other, other_tensors, prepared.placement,
                                                                    prepared.weight_bytes, fused))
            except Exception:
                continue
            other_key = simulator.step_key(prepared, index, other, other_tensors)
            checked += 1
            assert other_key != key or cost == base, f"{step.op.name}: {label} changes the cost, not the key"
    assert checked > 100
