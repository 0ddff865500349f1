"""simulate(trace, hardware, policy) -> per-op cycles, memory traffic and stalls (pure, no I/O).

Each matrix op runs on the systolic array (timing.py; masks.py for unstructured zero-skipping) at the
precision the policy gives it, or at the next wider one the array supports. Each vector op runs on
the SFU: ceil(elements x cycles-per-element / lanes) cycles. The simulator inserts SFU ops where
precision changes: a matrix op computing in another format than the SFU quantizes its activation
input(s) first (q, k and v of one attention block share one quantize of their common input) and
dequantizes its output after; a bias add follows every matrix op that has biases.

Memory. An activation operand that fits its on-chip buffer stays on chip between ops; one that does
not is read from DRAM as often as the dataflow sweeps it (re-fetched per column tile when streamed,
once when stationary). Weights, when streamed, come from DRAM in their compressed form (values,
indices, scales, biases) once if stationary or if they fit the filter buffer, else once per sweep.
Transfers are double-buffered: the first fold's share is exposed, and a transfer that outlasts the
compute it overlaps stalls the array for the difference. An op is memory-bound when its transfer
time exceeds its compute time.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.hardware import Hardware
from simulator.memory import OpStorage, mask_nonzeros, op_storage
from simulator.policy import Policy
from simulator.precision import Precision
from simulator.timing import SparsityPattern, ceil_div, gemm_cycles
from workloads.errors import InputError
from workloads.ops import BMM_ROLES, INT64_MAX, LINEAR_ROLES, Op, Trace

ATTENTION_INPUT_ROLES = ("q", "k", "v", "qkv")
RESULT_COLUMNS = (
    "name", "layer", "role", "group", "kind", "unit", "inserted", "category", "precision", "compute_precision",
    "macs_per_pe", "sparsity", "batch", "m", "k", "n", "elements", "macs", "folds", "compute_cycles",
    "dense_compute_cycles", "transfer_cycles", "stall_cycles", "total_cycles", "utilization", "weight_bits",
    "index_bits", "scale_bits", "bias_bits", "dram_bytes", "bound", "fused_into",
)


class Results(pd.DataFrame):
    """One row per op (trace ops and inserted SFU ops), with ``totals`` and ``notes`` attached.

    ``totals`` are computed from the rows present, so a filtered frame (``res[res.group == "ffn"]``)
    sums only its own rows (modify a frame's cells in place and its cached totals go stale: filter or
    copy instead); ``notes`` describe the whole run.
    """

    _metadata = ["hardware", "notes"]

    @property
    def _constructor(self) -> type[Results]:
        return Results

    @property
    def totals(self) -> dict:
        """Whole-frame totals, computed on first use from the rows present (not carried over by filtering)."""
        cached = self.__dict__.get("_totals")
        if cached is None:
            cached = summarize_results(self, self.hardware)
            object.__setattr__(self, "_totals", cached)  # a plain attribute: pandas does not propagate it
        return cached


def category(op_role: str, unit: str) -> str:
    """Report category: the per-block linear layers (the prunable six), other GEMMs, attention BMMs, or
    the SFU op type."""
    if unit == "sfu":
        return f"sfu_{op_role}"
    if op_role in BMM_ROLES:
        return "attention_bmm"
    return "linear" if op_role in LINEAR_ROLES else "other_gemm"


@dataclass(frozen=True)
class _Row:
    op: Op
    unit: str
    inserted: bool
    precision: str
    compute_precision: str
    macs_per_pe: int
    sparsity: str
    elements: int
    macs: int
    folds: int
    compute_cycles: int
    dense_compute_cycles: int  # the same op without weight sparsity
    transfer_cycles: int
    stall_cycles: int
    utilization: float
    storage: OpStorage | None
    dram_bytes: int
    fused_into: str = ""  # the SFU op whose pass also does this one's work


@functools.lru_cache(maxsize=1 << 16)
def _product_cycles(m: int, k: int, n: int, rows: int, cols: int, dataflow: str, batch: int, pack: int,
                    sparsity: SparsityPattern | None, timing: str) -> tuple[int, int, int]:
    """(compute cycles, folds, MACs), memoised per process: repeated layers and design points that share
    a product shape cost one evaluation."""
    result = gemm_cycles(m, k, n, rows, cols, dataflow, batch=batch, pack=pack, sparsity=sparsity, timing=timing)
    return result.compute_cycles, result.folds, result.macs


def _transfer_cycles(dram_bytes: int, hardware: Hardware) -> int:
    return math.ceil(dram_bytes / hardware.memory.dram_bytes_per_cycle) if dram_bytes else 0


def _stall(transfer: int, compute: int, chunks: int) -> int:
    """Exposed first chunk plus whatever transfer the overlapping compute cannot hide."""
    if transfer == 0:
        return 0
    return ceil_div(transfer, max(chunks, 1)) + max(0, transfer - compute)


def _bits_to_bytes(bits: int) -> int:
    return ceil_div(bits, 8)


class Simulator:
    """Simulates traces on one hardware under one policy (product shapes are memoised per process)."""

    def __init__(self, hardware: Hardware, policy: Policy, *, timing: str = "default",
                 mask_for: Callable[[Op], np.ndarray] | None = None) -> None:
        self.hardware = hardware
        self.policy = policy
        self.timing = timing
        self.mask_for = mask_for
        self.notes: list[str] = []
        self._nonzeros = mask_nonzeros(mask_for) if mask_for is not None else None
        pattern = policy.pattern
        weights = policy.config.sparsity.weights
        if pattern is not None and not hardware.sparse.can_skip(pattern):
            raise InputError(f"hardware {hardware.name} cannot skip {pattern} sparsity "
                             f"(sparse.patterns: {', '.join(hardware.sparse.patterns) or 'none'})")
        if weights is not None and pattern is None and not hardware.sparse.unstructured:
            raise InputError(f"hardware {hardware.name} has no unstructured zero-skipping "
                             "(sparse.unstructured: false)")
        self.masked = weights is not None and weights.uses_masks
        if self.masked and mask_for is None:
            raise InputError(f"{policy.name}: this sparsity setting needs weight masks")

    # --- matrix ops -------------------------------------------------------------------------
    def _compute_precision(self, requested: Precision) -> tuple[Precision, int]:
        chosen = self.hardware.compute_precision(requested)
        if chosen != requested:
            note = f"{requested} runs at {chosen} on {self.hardware.name} (no {requested} MAC units)"
            if note not in self.notes:
                self.notes.append(note)
        return chosen, self.hardware.macs_per_pe[chosen.name]

    def _array_cycles(self, op: Op, pack: int, pruned: bool) -> tuple[int, int, int]:
        """(compute cycles, folds, useful MACs) of a matrix op."""
        array = self.hardware.array
        if pruned and self.masked:
            from simulator.masks import masked_cycles

            if op.batch != 1:
                raise InputError(f"{op.name}: unstructured masks of grouped ops (batch {op.batch}) are not supported")
            return masked_cycles(self.mask_for(op), op.m, array.rows, array.cols, array.dataflow, pack=pack,
                                 timing=self.timing)
        sparsity = self.policy.pattern if pruned else None
        return _product_cycles(op.m, op.k, op.n, array.rows, array.cols, array.dataflow, op.batch, pack, sparsity,
                               self.timing)

    def _operand_traffic_bytes(self, op: Op, precision: Precision, storage: OpStorage) -> int:
        """DRAM bytes of one matrix op: activation operands that spill, weights when streamed."""
        hw, array = self.hardware, self.hardware.array
        mem = hw.memory
        activation_bits = precision.bits
        out_bits = hw.sfu_precision.bits if precision != hw.sfu_precision else precision.bits
        a_bytes = _bits_to_bytes(op.batch * op.m * op.k * activation_bits)
        c_bytes = _bits_to_bytes(op.batch * op.m * op.n * out_bits)
        col_tiles_n = ceil_div(op.n, array.cols)
        # How often the dataflow sweeps an operand it cannot keep on chip.
        a_sweeps = {"ws": col_tiles_n, "os": col_tiles_n, "is": 1}[array.dataflow]
        b_sweeps = {"ws": 1, "os": ceil_div(op.m, array.rows), "is": ceil_div(op.m, array.cols)}[array.dataflow]
        traffic = 0 if a_bytes <= mem.ifmap_buffer_bytes else a_bytes * a_sweeps
        if op.has_weight_operand:
            b_bytes = _bits_to_bytes(storage.weight_bits + storage.scale_bits + storage.bias_bits)
            if mem.weights_streamed and b_bytes:
                traffic += b_bytes if b_bytes <= mem.filter_buffer_bytes else b_bytes * b_sweeps
        else:
            b_bytes = _bits_to_bytes(op.batch * op.k * op.n * activation_bits)
            traffic += 0 if b_bytes <= mem.filter_buffer_bytes else b_bytes * b_sweeps
        traffic += 0 if c_bytes <= mem.ofmap_buffer_bytes else c_bytes
        return traffic

    def _matrix_row(self, op: Op) -> _Row:
        requested = self.policy.precision(op)
        chosen, pack = self._compute_precision(requested)
        pruned = self.policy.prunes(op)
        storage = op_storage(op, self.policy, self._nonzeros)
        compute, folds, macs = self._array_cycles(op, pack, pruned)
        dense_compute = self._array_cycles(op, pack, False)[0] if pruned else compute
        dram = self._operand_traffic_bytes(op, requested, storage)
        transfer = _transfer_cycles(dram, self.hardware)
        busy = compute + (op.batch if self.timing == "scalesim" and folds else 0)  # scalesim: last index
        slots = busy * self.hardware.pes * pack
        return _Row(op, "array", False, requested.name, chosen.name, pack, storage.sparse, 0, macs, folds,
                    compute, dense_compute, transfer, _stall(transfer, compute, folds),
                    macs / slots if slots else 0.0, storage, dram)

    # --- SFU ops ----------------------------------------------------------------------------
    def _sfu_row(self, op: Op, storage: OpStorage | None, in_bits: int, out_bits: int, extra_dram: int = 0) -> _Row:
        """An SFU op; ``storage`` is None for the ops the engine inserts (they own no parameters)."""
        hw = self.hardware
        cost = hw.sfu_cost(op.role)
        compute = math.ceil(op.elements * cost / hw.sfu.lanes) if op.elements else 0
        tensor_bytes = _bits_to_bytes(op.elements * max(in_bits, out_bits))
        spills = tensor_bytes > hw.memory.ifmap_buffer_bytes
        dram = extra_dram + (_bits_to_bytes(op.elements * (in_bits + out_bits)) if spills else 0)
        transfer = _transfer_cycles(dram, hw)
        stall = max(0, transfer - compute)
        busy = op.elements * cost / (hw.sfu.lanes * compute) if compute else 0.0
        precision = hw.sfu_precision.name
        return _Row(op, "sfu", storage is None, precision, precision, 0, "dense", op.elements, 0, 0, compute, compute,
                    transfer, stall, busy, storage, dram)

    def _vector_row(self, op: Op) -> _Row:
        sfu_bits = self.hardware.sfu_precision.bits
        storage = op_storage(op, self.policy, self._nonzeros)
        extra = 0
        if op.weight_params and self.hardware.memory.weights_streamed:
            bits = storage.weight_bits + storage.scale_bits + storage.bias_bits
            if op.role == "embedding":  # a lookup reads only the rows it gathers
                bits = min(bits, op.elements * self.policy.precision(op).bits)
            extra = _bits_to_bytes(bits)
        return self._sfu_row(op, storage, sfu_bits, sfu_bits, extra)

    def _inserted(self, op: Op, role: str, elements: int, in_bits: int, out_bits: int, suffix: str = "") -> _Row:
        inserted = Op(f"{op.name}.{suffix or role}", op.layer, role, op.group, "vector", elements=elements)
        return self._sfu_row(inserted, None, in_bits, out_bits)

    # --- whole trace ------------------------------------------------------------------------
    def rows(self, trace: Trace) -> list[_Row]:
        self.policy.check_against(trace)
        sfu = self.hardware.sfu_precision
        accumulator_bits = self.hardware.accumulator_bits
        quantized_inputs: set[tuple] = set()
        rows: list[_Row] = []
        for op in trace:
            if not op.is_matrix:
                rows.append(self._vector_row(op))
                continue
            requested = self.policy.precision(op)
            converts = requested != sfu
            if converts:
                elements = op.batch * op.m * op.k
                if op.role in ATTENTION_INPUT_ROLES:
                    key = (op.name.rsplit(".", 1)[0], op.m, op.k, requested)
                    if key in quantized_inputs:
                        elements = 0
                    quantized_inputs.add(key)
                if op.has_weight_operand:
                    if elements:
                        rows.append(self._inserted(op, "quantize", elements, sfu.bits, requested.bits))
                else:  # both operands of a BMM are activations
                    rows.append(self._inserted(op, "quantize", elements, sfu.bits, requested.bits, "quantize_a"))
                    rows.append(self._inserted(op, "quantize", op.batch * op.k * op.n, sfu.bits, requested.bits,
                                               "quantize_b"))
            rows.append(self._matrix_row(op))
            out_elements = op.batch * op.m * op.n
            if converts:
                in_bits = accumulator_bits if not requested.is_float else requested.bits
                rows.append(self._inserted(op, "dequantize", out_elements, in_bits, sfu.bits))
            if op.bias_params:
                rows.append(self._inserted(op, "bias", out_elements, sfu.bits, sfu.bits))
        return _fuse(rows) if self.hardware.sfu.fusion else rows


FUSION_ANCHORS = ("softmax", "layernorm", "groupnorm", "gelu", "relu", "tanh")
FUSIBLE = ("quantize", "dequantize", "bias", "mul", "add")


def _fuse(rows: list[_Row]) -> list[_Row]:
    """Fold element-wise SFU work into the softmax/norm/activation pass next to it.

    An SFU op of a fusible kind (conversions, bias, scaling, adds) that sits directly before or after an
    anchor op on a tensor of the same element count, with only such ops in between, costs no time of
    its own: the anchor's pass applies it on the fly (e.g. dequantize -> scale -> softmax -> quantize).
    """
    fused = list(rows)

    def fusible(index: int, elements: int) -> bool:
        row = fused[index]
        return row.unit == "sfu" and row.op.role in FUSIBLE and row.elements == elements and not row.fused_into

    for index, row in enumerate(rows):
        if row.unit != "sfu" or row.op.role not in FUSION_ANCHORS:
            continue
        for step in (-1, 1):
            other = index + step
            while 0 <= other < len(fused) and fusible(other, row.elements):
                fused[other] = dataclasses.replace(fused[other], compute_cycles=0, dense_compute_cycles=0,
                                                   transfer_cycles=0, stall_cycles=0, dram_bytes=0,
                                                   utilization=0.0, fused_into=row.op.name)
                other += step
    return fused


def _frame(rows: list[_Row], hardware: Hardware, policy: Policy) -> Results:
    records = []
    for row in rows:
        op = row.op
        storage = row.storage
        compute = row.compute_cycles
        transfer = row.transfer_cycles
        records.append({
            "name": op.name, "layer": op.layer, "role": op.role, "group": op.group,
            "kind": op.kind, "unit": row.unit, "inserted": row.inserted,
            "category": category(op.role, row.unit),
            "precision": row.precision, "compute_precision": row.compute_precision,
            "macs_per_pe": row.macs_per_pe, "sparsity": row.sparsity,
            "batch": op.batch, "m": op.m, "k": op.k, "n": op.n, "elements": row.elements,
            "macs": row.macs, "folds": row.folds, "compute_cycles": compute,
            "dense_compute_cycles": row.dense_compute_cycles,
            "transfer_cycles": transfer, "stall_cycles": row.stall_cycles,
            "total_cycles": compute + row.stall_cycles, "utilization": row.utilization,
            "weight_bits": storage.weight_bits if storage else 0,
            "index_bits": storage.index_bits if storage else 0,
            "scale_bits": storage.scale_bits if storage else 0,
            "bias_bits": storage.bias_bits if storage else 0,
            "dram_bytes": row.dram_bytes,
            "bound": "memory" if transfer > compute else "compute",
            "fused_into": row.fused_into,
        })
    for record in records:  # results use 64-bit columns: refuse what would wrap around
        for column, value in record.items():
            if isinstance(value, int) and value > INT64_MAX:
                raise InputError(f"op {record['name']}: {column} = {value} exceeds the 64-bit range; "
                                 "reduce the workload or array size")
    return Results(pd.DataFrame.from_records(records, columns=list(RESULT_COLUMNS)))


def summarize_results(frame: pd.DataFrame, hardware: Hardware) -> dict:
    """Whole-run totals. With SFU overlap the run takes the longer of the two units (ideal pipelining)."""
    array = frame[frame["unit"] == "array"]
    sfu = frame[frame["unit"] == "sfu"]
    array_cycles = int(array["total_cycles"].sum())
    sfu_cycles = int(sfu["total_cycles"].sum())
    total = max(array_cycles, sfu_cycles) if hardware.sfu.overlap_with_array else array_cycles + sfu_cycles
    slots = total * hardware.pes
    useful = float((array["macs"] / array["macs_per_pe"]).sum()) if len(array) else 0.0
    return {
        "total_cycles": total,
        "latency_ms": total / (hardware.array.clock_mhz * 1e3),
        "array_cycles": array_cycles,
        "sfu_cycles": sfu_cycles,
        "compute_cycles": int(frame["compute_cycles"].sum()),
        "stall_cycles": int(frame["stall_cycles"].sum()),
        "macs": int(frame["macs"].sum()),
        "utilization": useful / slots if slots else 0.0,
        "weight_bits": int(frame["weight_bits"].sum()),
        "index_bits": int(frame["index_bits"].sum()),
        "scale_bits": int(frame["scale_bits"].sum()),
        "bias_bits": int(frame["bias_bits"].sum()),
        "dram_bytes": int(frame["dram_bytes"].sum()),
    }


def simulate(trace: Trace, hardware: Hardware, policy: Policy, *, timing: str = "default",
             mask_for: Callable[[Op], np.ndarray] | None = None) -> Results:
    """Per-op results of one forward pass; ``results.totals`` sums them, ``results.notes`` explains fallbacks."""
    simulator = Simulator(hardware, policy, timing=timing, mask_for=mask_for)
    frame = _frame(simulator.rows(trace), hardware, policy)
    frame.hardware = hardware
    frame.notes = list(simulator.notes) + _imbalance_notes(frame)
    return frame


def _imbalance_notes(frame: Results) -> list[str]:
    """Unstructured masks: compute against ideal density scaling (dense cycles x kept fraction)."""
    masked = frame[frame["sparsity"] == "unstructured"]
    if masked.empty:
        return []
    dense_macs = (masked["batch"] * masked["m"] * masked["k"] * masked["n"]).sum()
    density = masked["macs"].sum() / dense_macs
    ideal = masked["dense_compute_cycles"].sum() * density
    actual = masked["compute_cycles"].sum()
    if ideal == 0:
        return [f"unstructured masks (density {density:.3g}): no weight is kept, so the masked ops take "
                f"{actual:,} compute cycles"]
    return [f"unstructured masks (density {density:.3f}): {actual:,} compute cycles vs {ideal:,.0f} at ideal density "
            f"scaling ({100 * (actual / ideal - 1):.3g}% lost to lanes waiting for the slowest)"]
