"""Lowering: the trace's ops become the steps the chip runs, with the conversions precision changes need.

A matrix op that computes in another format than the SFU (activations between ops are in the SFU's
format) gets, before it, a ``quantize`` of each activation operand into its format, and after it a
``dequantize`` of its accumulator output; a matrix op with biases is followed by a ``bias`` add. A
tensor is quantized once per format whatever the number of its readers (q, k and v projections of one
input share one quantize; cross-attention's k and v read another tensor, so they get their own).

State read by a matrix op (a KV cache) is stored in that op's format: the op reads it whole, and only
the entries this pass appends are quantized (``quantize_b``), from the activation that holds them.

Attention N:M sparsity (``sparsity.attention``) inserts an ``nm_select`` step that keeps the N largest
of every M values of the pruned operand along the product's K (probabilities for softmax x V, keys
for Q x K^T) and writes them compressed; the product then runs at the rate of the pattern the PEs
skip. Pruned keys are kept compressed in a KV cache, so a decode step selects only its new keys.

Each step names the tensors it reads and writes; the steps' tensors, with their stored widths in bits,
are the lowered tensor table that residency and costs work from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from simulator.formats.precision import Precision, compute_format, parse_precision
from simulator.formats.sparsity import SparsityPattern
from simulator.plan.binding import Plan
from simulator.spec.run_config import PRUNED_OPERAND, takes_scales
from workloads.errors import InputError
from workloads.ops import Op, Tensor, Trace

# The formats an ideal array would have, to say which product a preset computes wider than it needs.
_ANY_ARRAY = [parse_precision(name) for name in ("fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "int16", "int8",
                                                 "int4", "int2")]


@dataclass(frozen=True)
class Step:
    """One unit of work: a trace op on the array or the SFU, or an SFU op the simulator inserted."""

    op: Op
    unit: str  # "array" or "sfu"
    inserted: bool
    precision: Precision  # the array's compute format, or the SFU's
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    operands: str = ""  # array: the operands' formats, "int4/fp16" (weights/activations) when they differ
    stored_as: Op | None = None  # the trace op whose parameters this step reads, when ``op`` computes part of it
    pattern: SparsityPattern | None = None  # attention N:M on the product's pruned operand
    runs_at: SparsityPattern | None = None  # the pattern the PEs skip it at (``pattern`` or one it fits)

    @property
    def owner(self) -> Op:
        """The trace op whose stored parameters this step reads."""
        return self.stored_as or self.op


@dataclass(frozen=True)
class Lowered:
    steps: tuple[Step, ...]
    tensors: dict[str, Tensor]  # every tensor a step names, with ``bits`` filled in
    appends: dict[str, str]  # state tensor -> the activation holding its appended entries (written to DRAM)
    notes: tuple[str, ...] = ()  # products an array computes wider than their operands need, sparsity fallbacks
    filter_streams: frozenset[str] = frozenset()  # dequantized B operands, streamed into the filter buffer


def _operand_elements(op: Op, index: int) -> int:
    """Elements of a matrix op's A (index 0) or B (index 1) operand, as the op reads them."""
    return op.batch * op.m * op.k if index == 0 else op.batch * op.k * op.n


def _operand_rows(op: Op, index: int) -> tuple[int, int]:
    """(tokens, elements per token) of a matrix op's A or B operand: A is m tokens of k; B of a BMM is
    n tokens of k (keys, K^T) or k tokens of n (values, probabilities x V)."""
    if index == 0:
        return op.batch * op.m, op.k
    return (op.batch * op.n, op.k) if op.role == "bmm_qk" else (op.batch * op.k, op.n)


def _kv_scale_group(state: Tensor, reader: Op, per: str, sequences: int) -> int:
    """Elements per scale of a KV cache read by the attention BMM ``reader``: a head's vector of one
    token (per head), all heads of one token (per token), 0 (one scale per tensor)."""
    if per == "tensor":
        return 0
    if reader.kind != "bmm":
        raise InputError(f"{state.name}: per-{per} cache scales need the attention product that reads it; "
                         f"its first reader is {reader.name}")
    head_dim, tokens = (reader.k, reader.n) if reader.role == "bmm_qk" else (reader.n, reader.k)
    if per == "head":
        return head_dim
    group, rest = divmod(state.elements, sequences * tokens)
    if rest or not group:
        raise ValueError(f"{state.name}: {state.elements} elements are not {sequences} x {tokens} tokens")
    return group


def lower(trace: Trace, plan: Plan) -> Lowered:  # noqa: C901 - to split (issue 25)
    """The steps of ``trace`` under ``plan`` (a run config bound to a hardware)."""
    hardware, policy = plan.hardware, plan.policy
    sfu = hardware.sfu_precision
    spec = policy.config.precision
    in_pe = {parse_precision(name) for name in hardware.dequantize_in_pe}
    tensors: dict[str, Tensor] = {}
    notes: dict[str, None] = {}

    def attention_sparsity(op: Op) -> tuple[SparsityPattern, SparsityPattern] | None:
        pattern, runs_at, note = plan.attention_sparsity(op)
        if note is not None:
            notes[note] = None
        return (pattern, runs_at) if pattern is not None and runs_at is not None else None

    def pruned(tensor: Tensor, pattern: SparsityPattern, row: int) -> Tensor:
        return replace(tensor, nm_kept=pattern.n, nm_group=pattern.m, nm_row=row)

    for name, tensor in trace.tensors.items():
        bits = tensor.bits or (sfu.bits if tensor.kind in ("input", "activation") else 0)
        tensors[name] = tensor if bits == tensor.bits else replace(tensor, bits=bits)
    # A KV cache is stored in ``precision.kv_cache``, else in the activation format of the first matrix op
    # that reads it (a decode step) or reads the activation that fills it (a prefill).
    filled_by = {tensor.source: name for name, tensor in tensors.items() if tensor.kind == "state" and tensor.source}
    state_format: dict[str, Precision] = {}
    sequences = int(trace.workload.get("batch", 1))
    for op in trace:
        for index, name in enumerate(op.reads[: 2 if op.kind == "bmm" else 1] if op.is_matrix else ()):
            state = name if tensors[name].kind == "state" else filled_by.get(name)
            if state is None or state in state_format:
                continue
            kv = state_format[state] = policy.kv_cache_precision(op)
            scales = spec.effective_kv_scales(kv) if spec.kv_cache is not None else None
            group = _kv_scale_group(tensors[state], op, scales.per, sequences) if scales else 0
            tensors[state] = replace(tensors[state], bits=kv.bits, scale_group=group,
                                     scale_bits=scales.scale_bits + scales.zero_point_bits if scales and group else 0)
            sparse = attention_sparsity(op) if PRUNED_OPERAND.get(op.role) == index else None
            if sparse is not None:  # pruned keys: the cache keeps them compressed
                tensors[state] = pruned(tensors[state], sparse[0], op.k)
    for name, tensor in tensors.items():
        if tensor.kind == "state" and name not in state_format:
            tensors[name] = replace(tensor, bits=sfu.bits)
    per_token = spec.activation_scales.per == "token"
    steps: list[Step] = []
    converted: dict[tuple[str, Precision, int], str] = {}  # (activation, format, elements) -> its copy
    appends: dict[str, str] = {}
    filter_streams: set[str] = set()

    def add_tensor(name: str, elements: int, bits: int, scale_group: int = 0, scale_bits: int = 0) -> str:
        tensors[name] = Tensor(name, "activation", elements, bits=bits, scale_group=scale_group,
                               scale_bits=scale_bits)
        return name

    def sfu_step(op: Op, role: str, suffix: str, elements: int, reads: tuple[str, ...], writes: tuple[str, ...],
                 ) -> None:
        inserted = Op(f"{op.name}.{suffix}", op.layer, role, op.group, "vector", elements=elements)
        steps.append(Step(inserted, "sfu", True, sfu, reads, writes))

    def convert(op: Op, suffix: str, source: str, elements: int, fmt: Precision, rows: tuple[int, int] | None,
                ) -> str:
        """``elements`` of the activation ``source`` in ``fmt``: itself, the copy an earlier step made, or a
        new quantize step's output (after an absmax step finding per-token scales, when ``rows`` gives the
        tokens and the config asks for them)."""
        if fmt == sfu:
            return source
        key = (source, fmt, elements)
        if key not in converted:
            token_rows = rows if per_token and takes_scales(fmt) else None  # (tokens, elements per token)
            group, scale_bits = (token_rows[1], spec.activation_scales.scale_bits) if token_rows else (0, 0)
            if fmt.block is not None:  # MX/NVFP4: the block scales travel with the elements
                group, scale_bits = fmt.block.block, fmt.block.scale_bits
            converted[key] = add_tensor(f"{op.name}.{suffix}", elements, fmt.bits, group, scale_bits)
            reads: tuple[str, ...] = (source,)
            if token_rows:
                scales = add_tensor(f"{op.name}.{suffix}_scales", token_rows[0], scale_bits)
                sfu_step(op, "absmax", f"{suffix}_absmax", elements, (source,), (scales,))
                reads = (source, scales)
            sfu_step(op, "quantize", suffix, elements, reads, (converted[key],))
        return converted[key]

    def dequantize(op: Op, suffix: str, source: str, elements: int, fmt: Precision,
                   kept: SparsityPattern | None = None) -> str:
        """A stored operand (weights, a quantized cache) dequantized into ``fmt`` by the vector unit, tile by
        tile on its way into the filter buffer. A pruned one (a ``kept`` pattern along K, or a pruned
        cache) stays compressed: only its kept values are scaled, for PEs that skip the rest."""
        stored = tensors[source]
        if kept is None and stored.nm_group:
            kept = SparsityPattern(stored.nm_kept, stored.nm_group)
        out = add_tensor(f"{op.name}.{suffix}", elements, fmt.bits)
        if kept is not None:
            tensors[out] = pruned(tensors[out], kept, op.k)
        sfu_step(op, "dequantize", suffix, tensors[out].values_of(elements), (source,), (out,))
        filter_streams.add(out)
        return out

    selected: dict[str, str] = {}  # activation -> its pruned copy

    def select(op: Op, suffix: str, source: str, pattern: SparsityPattern) -> str:
        """The N:M-pruned copy of the activation ``source`` along rows of ``op.k`` (the product's K): the
        vector unit keeps the N largest of every M values and writes them compressed, with positions."""
        if source not in selected:
            tensor = tensors[source]
            out = selected[source] = f"{op.name}.{suffix}"
            tensors[out] = pruned(replace(tensor, name=out, kind="activation"), pattern, op.k)
            sfu_step(op, "nm_select", suffix, tensor.elements, (source,), (out,))
        return selected[source]

    outliers = policy.config.outliers
    outlier_format = parse_precision(outliers.precision) if outliers is not None else sfu

    def outlier_product(op: Op, rows: int, source: str, out_elements: int) -> str:
        """The ``rows`` outlier input dimensions of a weight matrix times the activation's matching columns,
        at the outlier precision, as a step of its own; its output, which the main product's adds."""
        product = Op(f"{op.name}.outliers", op.layer, op.role, op.group, op.kind, batch=op.batch, m=op.m, k=rows,
                     n=op.n)
        fmt = hardware.compute_precision(outlier_format)
        operand = convert(product, "quantize", source, op.batch * op.m * rows, outlier_format, None)
        result = add_tensor(f"{product.name}.result", out_elements, fmt.bits)
        steps.append(Step(product, "array", True, fmt, (operand,), (result,), str(outlier_format)))
        return result

    for op in trace:
        if op.held:  # stored weights no work of this pass reads: no step
            continue
        if not op.is_matrix:
            steps.append(Step(op, "sfu", False, sfu, op.reads, op.writes))
            continue
        activations = policy.activation_precision(op)
        weights = policy.weight_precision(op) if op.has_weight_operand else None
        sparse = attention_sparsity(op) if op.kind == "bmm" else None
        pruned_index = PRUNED_OPERAND[op.role] if sparse is not None else -1
        pruned_pattern = sparse[0] if sparse is not None else None
        operands = 2 if op.kind == "bmm" else 1
        reads = list(op.reads)
        stored_as, outlier_rows = None, outliers.dims if outliers is not None and weights is not None else 0
        if outlier_rows:  # the outlier rows of K are a product of their own, at their precision
            stored_as, op = op, replace(op, k=op.k - outlier_rows)
        formats = [activations] * operands
        if operands == 2 and tensors[reads[1]].kind == "state":
            formats[1] = state_format[reads[1]]
        second = weights if weights is not None else formats[1]
        compute = hardware.compute_precision(second, formats[0])
        ideal = compute_format(second, formats[0], [*_ANY_ARRAY, second, formats[0]])
        described = str(second) if second == formats[0] else f"{second} x {formats[0]}"
        if compute != ideal:
            notes[f"{described} runs at {compute} on {hardware.name} (no {ideal} MAC units)"] = None
        if activations.block is not None and compute != activations:  # no unit applies their block scales
            notes[f"{activations} activations stay in {compute} on {hardware.name} (it has no {activations} "
                  "units to apply their block scales)"] = None
            activations = compute
            formats = [compute if fmt.block is not None else fmt for fmt in formats]
        for index in range(operands):
            name = reads[index]
            tensor = tensors[name]
            suffix = "quantize" if operands == 1 else ("quantize_a", "quantize_b")[index]
            rows = _operand_rows(op, index)
            if tensor.kind == "state":  # a decode step: only the new entries are converted and appended
                if tensor.source:
                    appends[name] = convert(op, suffix, tensor.source, tensor.appended, state_format[name],
                                            (tensor.appended // tensor.scale_group, tensor.scale_group)
                                            if tensor.scale_group else None)
                    if index == pruned_index and pruned_pattern is not None:
                        appends[name] = select(op, f"{suffix}_select", appends[name], pruned_pattern)
                if tensor.scale_group and formats[index] not in in_pe:  # scales along the product: applied first
                    reads[index] = dequantize(op, "dequantize_b", name, _operand_elements(op, index), compute)
                continue
            elements = _operand_elements(op, index)
            reads[index] = convert(op, suffix, name, elements, formats[index], rows)
            if index == pruned_index and pruned_pattern is not None:
                reads[index] = select(op, suffix.replace("quantize", "select"), reads[index], pruned_pattern)
            state = filled_by.get(name)
            if state is not None and state not in appends:  # a prefill: the cache is written as it is filled
                cache = tensors[state]
                appends[state] = convert(op, f"{suffix}_cache", name, tensors[name].elements, state_format[state],
                                         (tensors[name].elements // cache.scale_group, cache.scale_group)
                                         if cache.scale_group else None)
                if index == pruned_index and pruned_pattern is not None:
                    appends[state] = select(op, f"{suffix}_cache_select", appends[state], pruned_pattern)
        scaled_weights = (weights is not None and _scales_along_k(weights, spec) and weights != compute
                          and not _same_blocks(weights, compute))
        if scaled_weights and weights not in in_pe:  # group/block scales vary along K: applied per weight
            kept = plan.compressed_pattern(op)  # N:M weights the PEs skip stay compressed
            reads[operands] = dequantize(op, "dequantize_w", reads[operands], op.batch * op.k * op.n, compute, kept)
        out_elements = op.batch * op.m * op.n
        # The output leaves the array in the SFU's format, or is dequantized (scaled) into it.
        converts = compute != sfu or activations != sfu or (weights is not None and not scaled_weights
                                                             and _takes_scales(weights))
        epilogue = [role for role, needed in (("dequantize", converts), ("add", bool(outlier_rows)),
                                              ("bias", bool(op.bias_params))) if needed]
        described_step = str(compute) if second == formats[0] == compute else described.replace(" x ", "/")
        pattern, runs_at = sparse if sparse is not None else (None, None)
        if not epilogue:
            steps.append(Step(op, "array", False, compute, tuple(reads), op.writes, described_step, stored_as,
                              pattern, runs_at))
            continue
        weight_reads = tuple(name for name in reads[operands:] if not name.endswith(".bias"))
        biases = tuple(name for name in reads[operands:] if name.endswith(".bias"))
        out_bits = hardware.accumulator_bits if converts and not compute.is_float else compute.bits
        current = add_tensor(f"{op.name}.result", out_elements, out_bits)
        steps.append(Step(op, "array", False, compute, (*reads[:operands], *weight_reads), (current,),
                          described_step, stored_as, pattern, runs_at))
        extras = {"bias": biases}
        if outlier_rows:
            extras["add"] = (outlier_product(op, outlier_rows, op.reads[0], out_elements),)
        for position, role in enumerate(epilogue):
            last = position == len(epilogue) - 1
            writes = op.writes if last else (add_tensor(f"{op.name}.{role}ed", out_elements, sfu.bits),)
            sfu_step(op, role, "outliers_add" if role == "add" else role, out_elements,
                     (current, *extras.get(role, ())), writes)
            current = writes[0]
    if per_token and not any(step.op.role == "absmax" for step in steps):
        raise InputError(f"{policy.name}: precision.activation_scales per token does not apply: no activation of "
                         f"{trace.model} is quantized to an integer or FP8 format on {hardware.name}")
    return Lowered(tuple(steps), tensors, appends, tuple(notes), frozenset(filter_streams))


def _takes_scales(fmt: Precision) -> bool:
    """Whether values in ``fmt`` carry scales of any kind (block formats their own)."""
    return fmt.block is not None or takes_scales(fmt)


def _scales_along_k(weights: Precision, spec) -> bool:
    """Whether ``weights`` carry scales that change along K (groups, MX/NVFP4 blocks)."""
    if weights.block is not None:
        return True
    return _takes_scales(weights) and spec.effective_weight_scales.per == "group"


def _same_blocks(stored: Precision, compute: Precision) -> bool:
    """Whether a unit computing in the block format ``compute`` applies ``stored``'s block scales itself
    (the same block size and scale format: MXFP4 weights on MXFP8 units widen only their elements)."""
    mine, theirs = compute.block, stored.block
    return mine is not None and theirs is not None and (mine.block, mine.scale) == (theirs.block, theirs.scale)
