"""simulate(trace, hardware, policy) -> per-op cycles, data movement and stalls (pure, no I/O).

The engine runs in passes, each in its own module, read in this order:

1. ``lowering``: the trace's ops become steps; quantize/dequantize/bias steps are inserted where
   precision changes and biases are added.
2. ``fusion``: element-wise SFU steps next to a softmax/norm/activation run inside its pass
   (``sfu.fusion``).
3. ``residency``: where each tensor lives (streamed to the next step, on chip, or in DRAM).
4. ``costs``: one cost record per step (array timing from timing.py and masks.py, SFU time, and the
   action counts per level), built from the step and the placement.
5. ``results``: the per-op frame and its totals.

Each matrix op runs on the systolic array at the precision the policy gives it, or at the next wider
one the array supports. Each vector op runs on the SFU: ceil(elements x cycles-per-element / lanes)
cycles. A collective runs on the system's links (collectives.py), between the chip's other steps. An op
is memory-bound when its transfer time exceeds its compute time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from operator import attrgetter
from typing import Any

import numpy as np

from simulator.energy.accounting import ACCOUNTINGS, step_energy
from simulator.energy.action_costs import ActionCosts, action_costs
from simulator.engine.array_split import Split, best_split
from simulator.engine.attention import KernelWork, Machine
from simulator.engine.capacity import Footprint
from simulator.engine.costs import (
    Cost,
    link_cost,
    matrix_traffic,
    sfu_traffic,
    stall_cycles,
    stored_weight_bytes,
    summed_costs,
    transfer_cycles,
)
from simulator.engine.fusion import fuse
from simulator.engine.grouping import PassOutcome, run_in_groups
from simulator.engine.kernel_costs import (
    KernelColumns,
    Works,
    columns,
    concurrent_chunks,
    rescaled_elements,
    row_products,
    sfu_elements,
    sized_tensors,
)
from simulator.engine.lowering import lower
from simulator.engine.masked_weights import MaskedWeights
from simulator.engine.records import ACCESS_COLUMNS, StepRecord
from simulator.engine.residency import STREAM, Placement, place
from simulator.engine.results import Results, frame, imbalance_notes
from simulator.engine.step_key import StepKey, step_key
from simulator.engine.steps import Prepared, Step
from simulator.engine.timing import check_timing, product_cycles
from simulator.formats.precision import Precision
from simulator.formats.sparsity import SparsityPattern
from simulator.formats.storage import OpStorage, op_storage
from simulator.plan.binding import bind
from simulator.spec.hardware import Hardware
from simulator.spec.run_config import Policy
from simulator.spec.system import System
from simulator.units import ceil_div
from workloads.errors import InputError
from workloads.ops import Op, Tensor, Trace, evolve
from workloads.vocabulary import category

__all__ = ["Prepared", "Simulator", "simulate"]


class Simulator:
    """Simulates traces on one hardware under one policy (product shapes are memoised per process)."""

    def __init__(self, hardware: Hardware, policy: Policy, *, timing: str = "default",
                 mask_for: Callable[[Op], np.ndarray] | None = None, accounting: str = "default",
                 system: System | None = None) -> None:
        self.plan = plan = bind(policy, hardware)
        self.hardware = hardware
        self.system = system  # the chips a trace's collectives run between (None: one chip, no collective)
        self.policy = policy = plan.policy
        check_timing(timing)
        self.timing = timing
        if timing == "scalesim" and hardware.arrays > 1:
            raise InputError(f"--timing scalesim models one array; hardware {hardware.name} has {hardware.arrays}")
        if accounting not in ACCOUNTINGS:
            raise InputError(f"unknown accounting {accounting!r}; choose from {', '.join(ACCOUNTINGS)}")
        self.accounting = accounting
        self.costs: ActionCosts | None = action_costs(hardware) if hardware.energy is not None else None
        self.machine = Machine.of(hardware)
        self.works = Works(self.machine)
        self.notes: list[str] = list(plan.notes)
        self._storages: dict[tuple[Any, ...], OpStorage] = {}
        self._step_records: dict[StepKey, StepRecord] = {}  # step key -> its record (see step_key.py)
        self.masked = MaskedWeights(mask_for, hardware.array, timing)
        self._nonzeros = self.masked.kept if mask_for is not None else None
        weights = policy.config.sparsity.weights
        if plan.masked and policy.config.outliers is not None:
            raise InputError(f"{policy.name}: outliers with weight masks are not modelled (masks cover all of K)")
        if weights is not None and weights.uses_masks and mask_for is None:
            raise InputError(f"{policy.name}: this sparsity setting needs weight masks")

    def storage(self, op: Op) -> OpStorage:
        """The op's stored parameters, memoised on what they depend on (not on rows or elements, which
        change with the batch): sample groups and repeated passes reuse them."""
        key = (op.name, op.layer, op.role, op.group, op.kind, op.batch, op.k, op.n, op.weight_params, op.bias_params)
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = op_storage(op, self.plan.storage, self._nonzeros)
        return storage

    def _array_cycles(self, op: Op, pack: int, sparsity: SparsityPattern | None, masked: bool = False,
                      transfer: Callable[[Split], int] | None = None) -> tuple[int, int, int, Split]:
        """(compute cycles, folds, useful MACs, split over the arrays) of a matrix op whose PEs skip
        ``sparsity`` (or its weight ``masked``). The split is the one that finishes first: its busiest
        array's cycles plus the stall of its ``transfer`` cycles (a split along m reads the weights into
        every array)."""
        array = self.hardware.array
        if masked and op.batch != 1:
            raise InputError(f"{op.name}: unstructured masks of grouped ops (batch {op.batch}) are not supported")

        def on_one_array(split: Split) -> tuple[int, int, int]:
            if masked:
                return self.masked.share_cycles(op, split, pack)
            return product_cycles(split.m, op.k, split.n, array.rows, array.cols, array.dataflow, split.batch,
                                   pack, sparsity, self.timing, array.double_buffered)

        def finish(split: Split) -> int:
            compute, folds, _ = on_one_array(split)
            return compute + (stall_cycles(transfer(split), compute, folds) if transfer is not None else 0)

        # a split's compute bounds its finish (stalls are never negative): no traffic for one that cannot win
        split = best_split(op, self.hardware.arrays, finish, lambda split: on_one_array(split)[0])
        cycles, folds, macs = on_one_array(split)
        if split.kind != "none":  # useful MACs of the whole op
            macs = self.masked.kept(op) * op.m if masked else product_cycles(
                op.m, op.k, op.n, array.rows, array.cols, array.dataflow, op.batch, pack, sparsity, self.timing,
                array.double_buffered)[2]
        return cycles, folds, macs, split

    def _weight_bytes(self, trace: Trace) -> dict[str, int]:
        """Stored bytes of every weight tensor (values, indices, scales; biases apart), from the storage of
        the op that owns it (the first reader that owns parameters): a tied weight is stored once, in its
        owner's format, and every reader reads that. An op owning several tensors splits its storage
        between them by element count."""
        stored: dict[str, int] = {}
        for op in trace:
            owned = [name for name in op.reads if trace.tensors[name].kind == "weight" and name not in stored]
            if not op.params or not owned:
                continue
            weights, biases = stored_weight_bytes(self.storage(op))
            for kind_bytes, names in ((weights, [n for n in owned if not n.endswith("bias")]),
                                      (biases, [n for n in owned if n.endswith("bias")])):
                total = sum(trace.tensors[n].elements for n in names)
                for name in names:
                    stored[name] = ceil_div(kind_bytes * trace.tensors[name].elements, total) if total else 0
        sfu_bits = self.hardware.sfu_precision.bits
        for name, tensor in trace.tensors.items():  # read, never owned: stored at the SFU's width
            if tensor.kind == "weight" and name not in stored:
                stored[name] = ceil_div(tensor.elements * sfu_bits, 8)
        return stored

    def _matrix_cost(self, step: Step, tensors: dict[str, Tensor], placement: Placement, weight_bytes: dict[str, int],
                     b_fetched: int | None = None) -> tuple[Cost, Precision, int, str, str]:
        op = step.op
        chosen = step.precision
        pack = self.hardware.macs_per_pe[chosen.name]
        pruned_weights = self.plan.skips and self.policy.prunes(op)
        pruned = pruned_weights or step.runs_at is not None
        pattern = step.runs_at or (self.plan.skip_pattern if pruned_weights else None)
        masked = pruned_weights and self.plan.masked
        weights = sum(weight_bytes.get(name, 0) for name in step.reads[1:]) if op.has_weight_operand else 0

        gated = pruned and self.hardware.sparse.mode == "gate"  # zeros take their slot: dense timing
        skipping = (None, False) if gated else (pattern, masked)
        traffics: dict[Split, dict[str, int]] = {}  # per candidate: timing, the dense pass and the record share it

        def traffic(split: Split) -> dict[str, int]:
            if split not in traffics:  # partial sums follow the mapping the timing uses (its kept depth)
                traffics[split] = matrix_traffic(step, tensors, placement, self.hardware, weights, pack,
                                                 split, drain_read=self.accounting == "zigzag",
                                                 sparsity=skipping[0], timing=self.timing, b_fetched=b_fetched).values
            return traffics[split]

        def transfer_of(split: Split) -> int:
            counts = traffic(split)
            return transfer_cycles(counts["dram_read_bytes"] + counts["dram_write_bytes"], self.hardware)

        compute, folds, macs, split = self._array_cycles(op, pack, *skipping, transfer_of)
        dense_compute = self._array_cycles(op, pack, None, False, transfer_of)[0] if pruned and not gated else compute
        counts = dict(traffic(split))
        # Every issued MAC moves an activation; a PE reduces its packed products into one partial sum a cycle.
        counts.update(array_activation_hops=macs, array_psum_updates=ceil_div(macs, pack))
        # The optional capabilities each use: skip multiplexers, in-PE dequantizers, the decompressor.
        skipped = not gated and (skipping[0] is not None or skipping[1])
        expanded = not self.plan.skips and self.plan.weights_compressed and self.policy.prunes(op)
        counts.update(skip_selects=macs if skipped else 0,
                      pe_dequantized_loads=counts["array_weight_loads"] if step.dequantized_in_pe else 0,
                      decompressed_weights=counts["array_weight_loads"] if expanded else 0)
        if gated:
            macs = self._array_cycles(op, pack, pattern, masked, transfer_of)[2]  # useful MACs: the kept ones
        transfer = transfer_cycles(counts["dram_read_bytes"] + counts["dram_write_bytes"], self.hardware)
        busy = compute + (op.batch if self.timing == "scalesim" and folds else 0)  # scalesim: last index
        slots = busy * self.hardware.pes * pack
        cost = Cost(compute_cycles=compute, dense_compute_cycles=dense_compute, folds=folds, macs=macs,
                    transfer_cycles=transfer, stall_cycles=stall_cycles(transfer, compute, folds),
                    utilization=macs / slots if slots else 0.0, **counts)
        sparsity = str(step.pattern) if step.pattern is not None else self.storage(step.owner).sparse
        return cost, chosen, pack, sparsity, split.label

    def _fused_matrix_cost(self, step: Step, tensors: dict[str, Tensor], placement: Placement,
                           weight_bytes: dict[str, int], work: KernelWork) -> tuple[Cost, Precision, int, str, str]:
        """Q K^T or P V of a fused attention kernel: the products of its block rows (kernel_costs.py), each
        costed as the array runs it, summed."""
        costs, busy = [], 0
        for row_step, sized, fetched in row_products(step, tensors, work, self.machine):
            cost, chosen, pack, sparsity, split = self._matrix_cost(row_step, sized, placement, weight_bytes, fetched)
            costs.append(cost)
            busy += cost.compute_cycles + (row_step.op.batch if self.timing == "scalesim" and cost.folds else 0)
        if work.blocks.splits > 1:  # the chunks run at once: their time is the concurrent products'
            timed, *_, split = self._matrix_cost(*concurrent_chunks(step, tensors, work), placement, weight_bytes)
            costs = [replace(summed_costs(costs, 1, self.hardware), compute_cycles=0, dense_compute_cycles=0, folds=0),
                     replace(timed, **dict.fromkeys(("macs", *ACCESS_COLUMNS), 0))]
            busy = timed.compute_cycles
        # the format, packing and sparsity are the step's; the split reported is the last row's (the longest)
        whole = costs[0] if len(costs) == 1 else summed_costs(costs, self.hardware.pes * pack * busy, self.hardware)
        return whole, chosen, pack, sparsity, split

    def _sfu_cost(self, step: Step, tensors: dict[str, Tensor], placement: Placement, weight_bytes: dict[str, int],
                  fused: bool, work: KernelWork | None = None) -> Cost:
        hw, op = self.hardware, step.op
        elements = sfu_elements(step, work)
        if elements != op.elements:  # a fused kernel's score op: its tensors are the computed scores
            tensors = sized_tensors(step, tensors, elements)
            op = evolve(op, elements=elements)
        reading = weight_bytes
        if op.role == "embedding":  # a lookup reads only the rows it gathers
            gathered = ceil_div(op.elements * self.policy.weight_precision(op).bits, 8)
            reading = {name: min(weight_bytes[name], gathered) for name in step.reads if name in weight_bytes}
        counts = sfu_traffic(step, tensors, placement, reading).values
        lane_cycles = op.elements * hw.sfu_cost(op.role) + rescaled_elements(step, work) * hw.sfu_cost("mul")
        compute = math.ceil(lane_cycles / hw.sfu_lanes) if op.elements and not fused else 0
        transfer = transfer_cycles(counts["dram_read_bytes"] + counts["dram_write_bytes"], hw)
        busy = lane_cycles / (hw.sfu_lanes * compute) if compute else 0.0
        return Cost(compute_cycles=compute, dense_compute_cycles=compute, transfer_cycles=transfer,
                    stall_cycles=max(0, transfer - compute), utilization=busy, **counts)

    @property
    def overlap_links(self) -> bool:
        """Whether the system's collectives run beside the chip's work (System.overlap_collectives)."""
        return self.system is not None and self.system.overlap_collectives

    def owned(self, results: Results) -> Results:
        """``results`` on this simulator's chip and links (what their totals are computed on)."""
        results.hardware, results.overlap_links = self.hardware, self.overlap_links
        return results

    def run(self, trace: Trace) -> Results:
        """All samples of ``trace`` at once, or in groups when that is faster (see grouping)."""
        records, group, footprint = self.run_records(trace)
        results = self.owned(frame(records))
        results.footprint = footprint
        results.notes = list(self.notes) + imbalance_notes(results)
        batch = int(trace.workload.get("batch", 1))
        if group != batch:
            results.notes.append(f"batch {batch} runs as {batch // group} groups of {group} samples: larger groups "
                                 "spill activations to DRAM and would take longer")
        return results

    def run_records(self, trace: Trace) -> tuple[list[StepRecord], int, Footprint]:
        """The step records of ``trace`` (all samples, run as the grouping chooses), samples per group, and
        what the run holds in DRAM."""
        return run_in_groups(trace, self.run_pass, self.hardware)

    def run_pass(self, trace: Trace) -> PassOutcome:
        """One pass over ``trace``: its per-op records, whether any activation spilled to DRAM, and what it
        holds in DRAM (the capacity check needs the grouping, so run_in_groups makes it)."""
        prepared = self.prepare(trace)
        return PassOutcome(self.records(prepared), prepared.spilled, prepared.footprint)

    def prepare(self, trace: Trace) -> Prepared:
        """``trace`` lowered, fused and placed, checked against the policy, with its DRAM footprint."""
        self.policy.check_against(trace)
        lowered = lower(trace, self.plan)
        self.notes.extend(note for note in lowered.notes if note not in self.notes)
        fused = fuse(lowered.steps) if self.hardware.sfu.fusion else {}
        placement = place(lowered, self.hardware)
        weight_bytes = sum(sum(stored_weight_bytes(self.storage(op))) for op in trace)
        state_bytes = sum(t.stored_bytes for t in lowered.tensors.values() if t.kind == "state")
        footprint = Footprint(weight_bytes, state_bytes, placement.peak_live_bytes)
        return Prepared(trace, lowered, fused, placement, self._weight_bytes(trace), footprint)

    def records(self, prepared: Prepared) -> list[StepRecord]:
        """Per-step records of a prepared pass (repeated blocks evaluated once)."""
        return [self.step_record(prepared, index) for index in range(len(prepared.lowered.steps))]

    def step_key(self, prepared: Prepared, index: int, step: Step | None = None,
                 tensors: dict[str, Tensor] | None = None) -> StepKey | None:
        """The memo key of step ``index`` of a prepared pass (see step_key.py); ``step`` and ``tensors``
        stand in for the pass's own when given, as in :meth:`step_record`."""
        step = step or prepared.lowered.steps[index]
        storage = None if step.inserted else self.storage(step.owner)
        return step_key(step, tensors or prepared.lowered.tensors, prepared.placement, prepared.weight_bytes,
                        index in prepared.fused, storage, self.plan)

    def step_record(self, prepared: Prepared, index: int, step: Step | None = None,
                    tensors: dict[str, Tensor] | None = None) -> StepRecord:
        """The record of step ``index`` of a prepared pass. ``step`` and ``tensors`` stand in for the pass's
        own when given: the same step at other sizes, its grown tensors among the pass's (generation
        re-costs decode steps this way, with the pass's placement)."""
        step = step or prepared.lowered.steps[index]
        tensors = tensors or prepared.lowered.tensors
        fused_into = prepared.fused.get(index, "")
        key = self.step_key(prepared, index, step, tensors)
        record = self._step_records.get(key) if key is not None else None
        if record is None:
            record = self._step_record(step, tensors, prepared.placement, prepared.weight_bytes, bool(fused_into))
            if key is not None:
                self._step_records[key] = record
        record = record.renamed(step.op.name, step.op.layer, fused_into)
        record.launch_cycles = self._launches(index, record)
        return record

    def _launches(self, index: int, record: StepRecord) -> int:
        """Launch cycles a step starts: per_op, each step that does work and is not fused into another;
        graph, the pass's first step (one program per pass)."""
        if self.hardware.dispatch.execution == "graph":
            return self.hardware.launch_cycles if index == 0 else 0
        works = record.total_cycles > 0 or record.dram_bytes > 0
        return self.hardware.launch_cycles if works and not record.fused_into else 0

    def _step_record(self, step: Step, tensors: dict[str, Tensor], placement: Placement,
                     weight_bytes: dict[str, int], fused: bool) -> StepRecord:
        storage: OpStorage | None = None if step.inserted else self.storage(step.owner)
        work = self.works.of(step)
        if step.unit == "array":
            cost, chosen, pack, sparsity, split = (
                self._fused_matrix_cost(step, tensors, placement, weight_bytes, work) if work is not None
                else self._matrix_cost(step, tensors, placement, weight_bytes))
            precision, compute_precision = step.operands or step.precision.name, chosen.name
        else:
            cost = (link_cost(step, tensors, placement, self.hardware, self.system) if step.unit == "link"
                    else self._sfu_cost(step, tensors, placement, weight_bytes, fused, work))
            sfu_name = self.hardware.sfu_precision.name
            pack, sparsity, precision, compute_precision, split = 0, "dense", sfu_name, sfu_name, ""
        residency = placement.home[step.writes[0]] if step.writes else ""
        # The B operand reaches the array dequantized (weights with scales along K, a scaled KV cache).
        dequantized = (step.unit == "array" and len(step.reads) > 1 and placement.home.get(step.reads[1]) == STREAM)
        record = _record(step, cost, storage, precision, compute_precision, pack, sparsity, residency, split,
                         dequantized, columns(step, work, tensors, placement, self.machine))
        if self.costs is not None:
            link_pj_per_bit = self.system.interconnect.link_pj_per_bit if self.system is not None else 0.0
            for column, value in step_energy(record, self.hardware, self.costs, self.accounting,
                                             link_pj_per_bit).items():
                setattr(record, column, value)
        return record


def _record(step: Step, cost: Cost, storage: OpStorage | None, precision: str, compute_precision: str,
            pack: int, sparsity: str, residency: str, array_split: str, dequantized: bool,
            kernel: KernelColumns) -> StepRecord:
    op, unit = step.op, step.unit
    compute, transfer, stall = cost.compute_cycles, cost.transfer_cycles, cost.stall_cycles
    stored = (storage.weight_bits, storage.index_bits, storage.scale_bits, storage.bias_bits) if storage else _UNSTORED
    elements = kernel.elements if unit == "sfu" else op.elements if unit == "link" else 0
    # Positional, in StepRecord's field order: a record is made for every step costed, and 70 keyword
    # arguments cost more than the rest of this function.
    values = (
        op.name, op.layer, op.role, op.group, op.kind, unit, step.inserted, category(op.role, unit), precision,
        compute_precision, pack, sparsity, dequantized, op.batch, op.m, op.k, op.n, elements, cost.macs, cost.folds,
        array_split, compute, cost.dense_compute_cycles, transfer, stall, compute + stall, 0, cost.utilization,
        *stored, cost.dram_bytes, *_ACCESS_COUNTS(cost), residency, "memory" if transfer > compute else "compute", "",
        kernel.kernel, kernel.block_q, kernel.block_k, kernel.key_chunks, kernel.closed_form_dram_bytes)
    return StepRecord(*values)


_UNSTORED = (0, 0, 0, 0)  # stored bits of an inserted step: weights, indices, scales, biases
_ACCESS_COUNTS = attrgetter(*ACCESS_COLUMNS)


def simulate(trace: Trace, hardware: Hardware, policy: Policy, *, timing: str = "default",
             mask_for: Callable[[Op], np.ndarray] | None = None, accounting: str = "default",
             system: System | None = None) -> Results:
    """Per-op results of one forward pass (one chip's of ``system``, when the trace is split over its chips);
    ``results.totals`` sums them, ``results.notes`` explains fallbacks."""
    return Simulator(hardware, policy, timing=timing, mask_for=mask_for, accounting=accounting,
                     system=system).run(trace)
