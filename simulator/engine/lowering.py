"""Lowering: the trace's ops become the steps the chip runs, with the conversions precision changes need.

A matrix op that computes in another format than the SFU (activations between ops are in the SFU's
format) gets, before it, a ``quantize`` of each activation operand into its format, and after it a
``dequantize`` of its accumulator output; a matrix op with biases is followed by a ``bias`` add. A
tensor is quantized once per format whatever the number of its readers (q, k and v projections of one
input share one quantize; cross-attention's k and v read another tensor, so they get their own).

State read by a matrix op (a KV cache) is stored in that op's format: the op reads it whole, and only
the entries this pass appends are quantized (``quantize_b``), from the activation that holds them.

Each step names the tensors it reads and writes; the steps' tensors, with their stored widths in bits,
are the lowered tensor table that residency and costs work from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from simulator.hardware import Hardware
from simulator.policy import Policy
from simulator.precision import Precision
from workloads.ops import Op, Tensor, Trace


@dataclass(frozen=True)
class Step:
    """One unit of work: a trace op on the array or the SFU, or an SFU op the simulator inserted."""

    op: Op
    unit: str  # "array" or "sfu"
    inserted: bool
    precision: Precision  # requested (array) or the SFU's
    reads: tuple[str, ...]
    writes: tuple[str, ...]


@dataclass(frozen=True)
class Lowered:
    steps: tuple[Step, ...]
    tensors: dict[str, Tensor]  # every tensor a step names, with ``bits`` filled in
    appends: dict[str, str]  # state tensor -> the activation holding its appended entries (written to DRAM)


def _operand_elements(op: Op, index: int) -> int:
    """Elements of a matrix op's A (index 0) or B (index 1) operand, as the op reads them."""
    return op.batch * op.m * op.k if index == 0 else op.batch * op.k * op.n


def lower(trace: Trace, hardware: Hardware, policy: Policy) -> Lowered:
    sfu = hardware.sfu_precision
    tensors: dict[str, Tensor] = {}
    for name, tensor in trace.tensors.items():
        bits = tensor.bits or (sfu.bits if tensor.kind in ("input", "activation") else 0)
        tensors[name] = tensor if bits == tensor.bits else Tensor(name, tensor.kind, tensor.elements, bits,
                                                                  tensor.appended, tensor.source)
    # A KV cache is stored in ``precision.kv_cache``, else in the format of the first matrix op that reads
    # it (a decode step) or reads the activation that fills it (a prefill).
    filled_by = {tensor.source: name for name, tensor in tensors.items() if tensor.kind == "state" and tensor.source}
    state_format: dict[str, Precision] = {}
    for op in trace:
        for name in op.reads[: 2 if op.kind == "bmm" else 1] if op.is_matrix else ():
            state = name if tensors[name].kind == "state" else filled_by.get(name)
            if state is not None and state not in state_format:
                state_format[state] = policy.kv_cache_precision(op)
    for name, tensor in tensors.items():
        if tensor.kind == "state":
            tensors[name] = replace(tensor, bits=state_format.get(name, sfu).bits)
    steps: list[Step] = []
    quantized: dict[tuple[str, Precision, int], str] = {}
    appends: dict[str, str] = {}

    def add_tensor(name: str, elements: int, bits: int) -> str:
        tensors[name] = Tensor(name, "activation", elements, bits=bits)
        return name

    def sfu_step(op: Op, role: str, suffix: str, elements: int, reads: tuple[str, ...], writes: tuple[str, ...],
                 ) -> None:
        inserted = Op(f"{op.name}.{suffix}", op.layer, role, op.group, "vector", elements=elements)
        steps.append(Step(inserted, "sfu", True, sfu, reads, writes))

    stored: dict[tuple[str, Precision], str] = {}  # (activation, format) -> its converted copy

    def store(op: Op, suffix: str, source: str, elements: int, fmt: Precision) -> str:
        """The activation ``source`` (``elements`` of it) in the format ``fmt``: itself, the copy an earlier
        step converted, or a new quantize step's output."""
        if fmt == sfu:
            return source
        if (source, fmt) not in stored:
            stored[(source, fmt)] = add_tensor(f"{op.name}.{suffix}", elements, fmt.bits)
            sfu_step(op, "quantize", suffix, elements, (source,), (stored[(source, fmt)],))
        return stored[(source, fmt)]

    for op in trace:
        if op.held:  # stored weights no work of this pass reads: no step
            continue
        if not op.is_matrix:
            steps.append(Step(op, "sfu", False, sfu, op.reads, op.writes))
            continue
        requested = policy.precision(op)
        converts = requested != sfu
        operands = 2 if op.kind == "bmm" else 1
        reads = list(op.reads)
        for index in range(operands):
            name = reads[index]
            tensor = tensors[name]
            suffix = "quantize" if operands == 1 else ("quantize_a", "quantize_b")[index]
            if tensor.kind == "state":  # a decode step: only the new entries are converted and appended
                if tensor.source:
                    appends[name] = store(op, suffix, tensor.source, tensor.appended, state_format[name])
                continue
            if converts:
                elements = _operand_elements(op, index)
                key = (name, requested, elements)
                if key not in quantized:
                    quantized[key] = add_tensor(f"{op.name}.{suffix}", elements, requested.bits)
                    sfu_step(op, "quantize", suffix, elements, (name,), (quantized[key],))
                    if elements == tensor.elements:
                        stored[(name, requested)] = quantized[key]
                reads[index] = quantized[key]
            state = filled_by.get(name)
            if state is not None and state not in appends:  # a prefill: the cache is written as it is filled
                appends[state] = store(op, f"{suffix}_cache", name, tensors[name].elements, state_format[state])
        out_elements = op.batch * op.m * op.n
        epilogue = [role for role, needed in (("dequantize", converts), ("bias", bool(op.bias_params))) if needed]
        if not epilogue:
            steps.append(Step(op, "array", False, requested, tuple(reads), op.writes))
            continue
        weights = tuple(name for name in reads[operands:] if not name.endswith(".bias"))
        biases = tuple(name for name in reads[operands:] if name.endswith(".bias"))
        out_bits = hardware.accumulator_bits if converts and not requested.is_float else requested.bits
        current = add_tensor(f"{op.name}.result", out_elements, out_bits)
        steps.append(Step(op, "array", False, requested, (*reads[:operands], *weights), (current,)))
        for position, role in enumerate(epilogue):
            last = position == len(epilogue) - 1
            writes = op.writes if last else (add_tensor(f"{op.name}.{role}d", out_elements, sfu.bits),)
            extra = biases if role == "bias" else ()
            sfu_step(op, role, role, out_elements, (current, *extra), writes)
            current = writes[0]
    return Lowered(tuple(steps), tensors, appends)
