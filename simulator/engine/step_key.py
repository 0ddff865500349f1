"""The memo key of a step's cost: everything its record depends on but its name and layer.

The repeated blocks of a model lower to steps that differ only in names, so the engine costs each
distinct step once (keys are named tuples: built for every step of every pass, they must be cheap). A
key that forgot a field would hand one step another's cost; tests/engine/test_step_key.py changes every
field of a step, its op and its tensors, and requires the key to change or the cost to stay the same.
"""

from __future__ import annotations

from typing import NamedTuple

from simulator.engine.attention import KernelPart
from simulator.engine.residency import Placement
from simulator.engine.steps import Step
from simulator.formats.precision import Precision
from simulator.formats.sparsity import SparsityPattern
from simulator.formats.storage import OpStorage
from simulator.plan.binding import Plan
from workloads.attention_geometry import AttentionGeometry
from workloads.ops import Tensor


class ReadKey(NamedTuple):
    kind: str
    layout: tuple[int, ...]  # Tensor.layout: size and how it is stored
    home: str
    stored_bytes: int | None  # a weight's stored bytes (its owner's format), else None


class WriteKey(NamedTuple):
    layout: tuple[int, ...]
    home: str
    to_dram: bool


class StorageKey(NamedTuple):
    """The stored parameters a step reads (bits), and the policy facts its cost reads of its op."""

    value_bits: int
    index_bits: int
    scale_bits: int
    bias_bits: int
    sparse: str
    pruned: bool
    gathered: Precision | None  # an embedding lookup reads rows at its weights' format


class StepKey(NamedTuple):
    unit: str
    inserted: bool
    precision: Precision
    operands: str
    pattern: SparsityPattern | None
    runs_at: SparsityPattern | None
    dequantized_in_pe: bool
    kernel: KernelPart | None
    attention: AttentionGeometry | None
    role: str
    group: str
    kind: str
    batch: int
    m: int
    k: int
    n: int
    elements: int
    ranks: int
    weight_params: int
    bias_params: int
    fused: bool
    reads: tuple[ReadKey, ...]
    writes: tuple[WriteKey, ...]
    stored: StorageKey | None


def step_key(step: Step, tensors: dict[str, Tensor], placement: Placement, weight_bytes: dict[str, int],
             fused: bool, storage: OpStorage | None, plan: Plan) -> StepKey | None:
    """The key of ``step`` (``storage``: its owner's stored parameters, None for inserted steps); None
    for a step whose cost depends on the op itself (timed from weight masks)."""
    op, policy = step.op, plan.policy
    if plan.masked and step.unit == "array" and policy.prunes(op):
        return None
    home = placement.home
    reads = tuple(ReadKey(tensors[name].kind, tensors[name].layout, home[name], weight_bytes.get(name))
                  for name in step.reads)
    writes = tuple(WriteKey(tensors[name].layout, home[name], name in placement.written) for name in step.writes)
    stored = None
    if storage is not None:
        stored = StorageKey(storage.value_bits, storage.index_bits, storage.scale_bits, storage.bias_bits,
                            storage.sparse, policy.prunes(op),
                            policy.weight_precision(op) if op.role == "embedding" else None)
    return StepKey(step.unit, step.inserted, step.precision, step.operands, step.pattern, step.runs_at,
                   step.dequantized_in_pe, step.kernel, op.attention, op.role, op.group, op.kind, op.batch, op.m,
                   op.k, op.n, op.elements, op.ranks,
                   op.weight_params, op.bias_params, fused, reads, writes, stored)
