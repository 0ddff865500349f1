"""Unit costs: one cost record per step (cycles and action counts), from the step and the placement.

Per-level action counts (bytes unless named otherwise):

- DRAM: ``dram_read_bytes`` (spilled activations, inputs, state and weights read by the step, once per
  sweep when an operand does not fit its buffer, or as the blocked loops fetch it where the chip blocks
  them: ``blocking``) and ``dram_write_bytes`` (spilled activations,
  outputs and appended state the step produces).
- Buffers: the activation (``ifmap``) buffer, the ``filter`` buffer and the ``ofmap`` (accumulator)
  buffer, reads and writes. A matrix op reads its A operand from the ifmap buffer once per sweep of
  the dataflow and its B operand (weights, or a BMM's second activation copied there) from the filter
  buffer once per sweep; what comes from DRAM is first written to those buffers. Partial sums are
  written to the ofmap buffer once per fold along K at accumulator width and read back for the next
  fold, and once more to drain the finished output. SFU steps read and write the activation buffer.
- Array: ``array_weight_loads`` (B elements entering PEs: once in ws, once per sweep when streamed in
  os/is), ``array_activation_hops`` (one per MAC the PEs issue) and ``array_psum_updates`` (one per
  MAC / MACs per PE: a PE reduces its packed products into one partial sum per cycle); the uses of the
  hardware's optional capabilities: ``skip_selects`` (MACs issued on a product the PEs skip),
  ``pe_dequantized_loads`` (weight loads the PEs dequantize) and ``decompressed_weights`` (weight loads
  the decompressor expands).
- Links: ``link_bytes``, the bytes a collective sends from this chip to others.

Transfer cycles are the DRAM bytes over the bandwidth; transfers are double-buffered fold by fold: one
fold's share does not overlap (the first load when compute-bound, the last compute when transfer-bound),
and a transfer that outlasts the compute it overlaps stalls for the difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simulator.engine.array_split import Split
from simulator.engine.blocking import Buffers, Operands, best_blocking, streamed
from simulator.engine.collectives import collective_cost
from simulator.engine.mapping import Mapping
from simulator.engine.records import ACCESS_COLUMNS
from simulator.engine.residency import CHIP, DRAM, STREAM, Placement, tensor_bytes
from simulator.engine.steps import Step
from simulator.formats.sparsity import SparsityPattern
from simulator.formats.storage import OpStorage
from simulator.spec.hardware import Hardware
from simulator.spec.system import System
from simulator.units import ceil_div
from workloads.errors import InputError
from workloads.ops import Tensor


@dataclass(frozen=True)
class Cost:
    """What one step costs: cycles, and the actions an energy model multiplies."""

    compute_cycles: int = 0
    dense_compute_cycles: int = 0
    folds: int = 0
    macs: int = 0
    transfer_cycles: int = 0
    stall_cycles: int = 0
    utilization: float = 0.0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    ifmap_read_bytes: int = 0
    ifmap_write_bytes: int = 0
    filter_read_bytes: int = 0
    filter_write_bytes: int = 0
    ofmap_read_bytes: int = 0
    ofmap_write_bytes: int = 0
    array_weight_loads: int = 0
    array_activation_hops: int = 0
    array_psum_updates: int = 0
    skip_selects: int = 0  # MACs issued through the PEs' skip multiplexers
    pe_dequantized_loads: int = 0  # weights the PEs dequantize as they load them
    decompressed_weights: int = 0  # weight elements the decompressor expands on their way into the array
    link_bytes: int = 0  # bytes sent to other chips (a collective)

    @property
    def dram_bytes(self) -> int:
        return self.dram_read_bytes + self.dram_write_bytes


def transfer_cycles(dram_bytes: int, hardware: Hardware) -> int:
    return math.ceil(dram_bytes / hardware.memory.sustained_bytes_per_cycle)


class Counts:
    """Accumulates one step's traffic, level by level."""

    def __init__(self) -> None:
        self.values = dict.fromkeys(ACCESS_COLUMNS, 0)

    def add(self, **amounts: int) -> None:
        for key, amount in amounts.items():
            self.values[key] += amount

    def write_out(self, name: str, size: int, placement: Placement) -> None:
        """A tensor the step produces: to the next step, to the activation buffer, and/or to DRAM."""
        if placement.home[name] == CHIP:
            self.add(ifmap_write_bytes=size)
        if name in placement.written:
            self.add(dram_write_bytes=size)


def matrix_traffic(step: Step, tensors: dict[str, Tensor], placement: Placement, hardware: Hardware,
                   weight_bytes: int, pack: int, split: Split, drain_read: bool = False,
                   sparsity: SparsityPattern | None = None, timing: str = "default",
                   b_fetched: int | None = None) -> Counts:
    """Traffic of a matrix step whose weights (GEMM) take ``weight_bytes`` stored, run as ``split`` over
    the chip's arrays, its PEs skipping ``sparsity`` (the mapping its timing uses, so partial sums are
    written once per fold of the kept depth): each array sweeps its share; the operand a split does not
    partition (A when splitting n, B when splitting m) is read from its buffer by every array in use.
    The arrays share the chip's buffers and sweep their shares in step, so a tile of that operand
    fetched into a buffer feeds every array at once: what comes from DRAM (or is copied from the
    activation buffer) is one array's sweeps, not one per array. ``drain_read``
    (ZigZag's accounting) also reads each finished output from the ofmap buffer at its own width, and
    sends an output bound for DRAM there directly instead of through the activation buffer. ``b_fetched``
    overrides the bytes of B brought from its home (a fused attention's keys and values, fetched once for
    all its query blocks)."""
    op, mem = step.op, hardware.memory
    counts = Counts()
    array = hardware.array
    placed = Mapping.of(split.m, op.k, split.n, array.rows, array.cols, array.dataflow, pack=pack, sparsity=sparsity,
                        timing=timing)
    a_sweeps, b_sweeps, k_folds = placed.a_sweeps, placed.b_sweeps, placed.k_folds
    a_copies = split.arrays if split.kind == "n" else 1
    b_copies = split.arrays if split.kind == "m" else 1
    products = op.batch if op.kind == "bmm" else 1  # BMM products run one at a time
    a_name = step.reads[0]
    a_bytes = tensors[a_name].bytes_of(op.batch * op.m * op.k)
    counts.add(ifmap_read_bytes=a_bytes * a_sweeps * a_copies)
    b_name = step.reads[1] if len(step.reads) > 1 else ""  # none: outlier rows, read with their matrix
    if op.kind == "bmm" or placement.home.get(b_name) == STREAM:  # an activation, or dequantized on its way
        b_bytes = tensors[b_name].bytes_of(op.batch * op.k * op.n)
        b_home = placement.home[b_name]
    else:
        b_bytes = weight_bytes
        if mem.whole_weight_tiles and weight_bytes:
            b_bytes = whole_tiles_bytes(weight_bytes, placed.depth, op.n, array.rows, array.cols)
        b_home = DRAM if mem.weights_streamed else "preloaded"  # preloaded weights sit in the filter buffer
    operands = Operands(op.m, op.n, ceil_div(a_bytes, products), ceil_div(b_bytes, products), a_sweeps, b_sweeps,
                        placement.home[a_name] == DRAM, b_home == DRAM)
    buffers = Buffers(mem.ifmap_buffer_bytes, mem.filter_buffer_bytes, mem.ofmap_buffer_bytes,
                      ceil_div(hardware.accumulator_bits, 8))
    blocked = best_blocking(operands, buffers) if mem.loop_blocking else streamed(operands, buffers)
    if placement.home[a_name] == DRAM:
        fetched = a_bytes * blocked.a_fetches
        counts.add(dram_read_bytes=fetched, ifmap_write_bytes=fetched)
    fetched = b_fetched if b_fetched is not None else b_bytes * blocked.b_fetches
    if b_home == DRAM:
        counts.add(dram_read_bytes=fetched, filter_write_bytes=fetched)
    elif b_home == CHIP:
        counts.add(ifmap_read_bytes=fetched, filter_write_bytes=fetched)
    elif b_home == STREAM:  # the vector unit writes it there (each sweep that does not fit dequantizes again)
        counts.add(filter_write_bytes=fetched)
    counts.add(filter_read_bytes=b_bytes * b_sweeps * b_copies)
    out_elements = op.batch * op.m * op.n
    psum_bytes = tensor_bytes(out_elements, hardware.accumulator_bits)
    counts.add(ofmap_write_bytes=psum_bytes * k_folds, ofmap_read_bytes=psum_bytes * k_folds)
    b_elements = op.batch * op.k * op.n
    loads = b_elements if hardware.array.dataflow == "ws" else b_elements * b_sweeps
    counts.add(array_weight_loads=loads * b_copies)
    for name in step.writes:
        size = tensors[name].stored_bytes
        if drain_read and name in placement.written:  # ZigZag: it leaves through the ofmap buffer, to DRAM
            counts.add(ofmap_read_bytes=size, dram_write_bytes=size)
        else:
            counts.write_out(name, size, placement)
            if drain_read:
                counts.add(ofmap_read_bytes=size)
    return counts


def whole_tiles_bytes(stored: int, depth: int, n: int, rows: int, cols: int) -> int:
    """Bytes of a weight matrix moved as whole rows x cols tiles (``memory.whole_weight_tiles``): its stored
    bytes (values, and their scales alike) scaled by the zero padding of its reduction depth (K', as the PEs
    cover it) and its columns."""
    return ceil_div(stored * ceil_div(depth, rows) * rows * ceil_div(n, cols) * cols, depth * n)


def sfu_traffic(step: Step, tensors: dict[str, Tensor], placement: Placement,
                weight_bytes: dict[str, int]) -> Counts:
    """Traffic of an SFU step; ``weight_bytes`` are the stored bytes of the weights it reads. A step over
    no elements (parameters stored for training only) moves nothing."""
    counts = Counts()
    for name in dict.fromkeys(step.reads) if step.op.elements else ():
        tensor = tensors[name]
        size = weight_bytes[name] if tensor.kind == "weight" else tensor.stored_bytes
        home = placement.home[name]
        if home == DRAM:
            counts.add(dram_read_bytes=size, ifmap_write_bytes=size, ifmap_read_bytes=size)
        elif home == CHIP:
            counts.add(ifmap_read_bytes=size)
    for name in step.writes:
        counts.write_out(name, tensors[name].stored_bytes, placement)
    return counts


def link_cost(step: Step, tensors: dict[str, Tensor], placement: Placement, hardware: Hardware,
              system: System | None) -> Cost:
    """A collective: its time on the system's links (collectives.py) at the chip's clock, the bytes it sends,
    and the chip's own traffic reading and writing the activations it moves."""
    op = step.op
    if system is None:
        raise InputError(f"{op.name}: a collective runs between chips; hardware {hardware.name} is one chip "
                         "(give a system preset)")
    moved = collective_cost(op.role, tensors[step.writes[0]].stored_bytes, op.ranks, system.interconnect)
    compute = math.ceil(moved.seconds * hardware.array.clock_mhz * 1e6)
    counts = sfu_traffic(step, tensors, placement, {}).values
    counts["link_bytes"] = moved.link_bytes
    transfer = transfer_cycles(counts["dram_read_bytes"] + counts["dram_write_bytes"], hardware)
    return Cost(compute_cycles=compute, dense_compute_cycles=compute, transfer_cycles=transfer,
                stall_cycles=max(0, transfer - compute), **counts)


def stall_cycles(transfer: int, compute: int, chunks: int) -> int:
    """Double buffering over ``chunks`` folds, each loading 1/chunks of the transfer (t) and computing
    1/chunks of the work (c): the op takes t + c + (chunks - 1) x max(t, c), so it stalls, beyond its
    compute, for whatever transfer the compute cannot hide plus the one chunk that cannot overlap: the
    first load when compute-bound, the last compute when transfer-bound."""
    if transfer == 0:
        return 0
    return ceil_div(min(transfer, compute), max(chunks, 1)) + max(0, transfer - compute)


def stored_weight_bytes(storage: OpStorage) -> tuple[int, int]:
    """(weights with their indices and scales, biases) of one op's stored parameters, in bytes."""
    return ceil_div(storage.weight_bits + storage.scale_bits, 8), ceil_div(storage.bias_bits, 8)


def summed_costs(costs: list[Cost], slots: int, hardware: Hardware) -> Cost:
    """Costs of products run one after another as one step, which offers ``slots`` MAC slots: counts and
    cycles add up; the transfer, its stall (double-buffered over all their folds) and the utilisation are
    those of the whole."""
    sums = {name: sum(getattr(cost, name) for cost in costs)
            for name in ("compute_cycles", "dense_compute_cycles", "folds", "macs", *ACCESS_COLUMNS)}
    transfer = transfer_cycles(sums["dram_read_bytes"] + sums["dram_write_bytes"], hardware)
    return Cost(**sums, transfer_cycles=transfer, stall_cycles=stall_cycles(transfer, sums["compute_cycles"],
                                                                            sums["folds"]),
                utilization=sums["macs"] / slots if slots else 0.0)
