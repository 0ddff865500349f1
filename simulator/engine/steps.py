"""The steps lowering hands to the rest of the engine: what runs on which unit, reading and writing which
tensors, and the lowered tensor table; and a pass prepared for costing (typed records between the stages)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from simulator.engine.attention import KernelPart
from simulator.formats.precision import Precision
from simulator.formats.sparsity import SparsityPattern
from workloads.copying import copier
from workloads.ops import Op, Tensor, Trace

if TYPE_CHECKING:  # the later stages' records (they import this module)
    from simulator.engine.capacity import Footprint
    from simulator.engine.residency import Placement


@dataclass(frozen=True, slots=True)
class Step:
    """One unit of work: a trace op on the array, the SFU or the links (a collective), or an SFU op the
    simulator inserted."""

    op: Op
    unit: str  # "array", "sfu" or "link"
    inserted: bool
    precision: Precision  # the array's compute format, or the SFU's
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    operands: str = ""  # array: the operands' formats, "int4/fp16" (weights/activations) when they differ
    stored_as: Op | None = None  # the trace op whose parameters this step reads, when ``op`` computes part of it
    pattern: SparsityPattern | None = None  # attention N:M on the product's pruned operand
    runs_at: SparsityPattern | None = None  # the pattern the PEs skip it at (``pattern`` or one it fits)
    dequantized_in_pe: bool = False  # the PEs apply its B operand's scales as they load it (dequantize_in_pe)
    kernel: KernelPart | None = None  # its part of a fused attention kernel

    @property
    def owner(self) -> Op:
        """The trace op whose stored parameters this step reads."""
        return self.stored_as or self.op


evolve_step = copier(Step)  # a copy with some fields changed, unchecked (workloads.copying)


@dataclass(frozen=True)
class Lowered:
    steps: tuple[Step, ...]
    tensors: dict[str, Tensor]  # every tensor a step names, with ``bits`` filled in
    appends: dict[str, str]  # state tensor -> the activation holding its appended entries (written to DRAM)
    notes: tuple[str, ...] = ()  # products an array computes wider than their operands need, sparsity fallbacks
    filter_streams: frozenset[str] = frozenset()  # dequantized B operands, streamed into the filter buffer
    kernel_local: frozenset[str] = frozenset()  # a fused kernel's scores and probabilities: never leave the chip


@dataclass(frozen=True)
class Prepared:
    """A pass ready to be costed: the trace lowered, fused and placed, and its weights' stored bytes."""

    trace: Trace
    lowered: Lowered
    fused: dict[int, str]
    placement: Placement
    weight_bytes: dict[str, int]
    footprint: Footprint

    @property
    def spilled(self) -> bool:
        """Whether any activation of the pass is spilled to DRAM."""
        return any(self.placement.home[name] == "dram" for name in self.placement.footprint_bytes)
