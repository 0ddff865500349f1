"""Lowering: the trace's ops become the steps the chip runs, with the conversions precision changes need.

A matrix op that computes in another format than the SFU (activations between ops are in the SFU's
format) gets, before it, a ``quantize`` of each activation operand into its format, and after it a
``dequantize`` of its accumulator output; a matrix op with biases is followed by a ``bias`` add. A
tensor is quantized once per format whatever the number of its readers (q, k and v projections of one
input share one quantize; cross-attention's k and v read another tensor, so they get their own).

State read by a matrix op (a KV cache) is stored in that op's format: the op reads it whole, and only
the entries this pass appends are quantized (``quantize_b``), from the activation that holds them. A
cache's per-head or per-token scales scale the scores (Q K^T's epilogue) or fold into the
probabilities (before P V); block-format caches are dequantized where no unit applies their blocks.

Attention N:M sparsity (``sparsity.attention``) inserts an ``nm_select`` step that keeps the N largest
of every M values of the pruned operand along the product's K (probabilities for softmax x V, keys
for Q x K^T) and writes them compressed; the product then runs at the rate of the pattern the PEs
skip. Pruned keys are kept compressed in a KV cache, so a decode step selects only its new keys.

Each step names the tensors it reads and writes; the steps' tensors, with their stored widths in bits,
are the lowered tensor table that residency and costs work from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from simulator.engine.kernel_lowering import mark_kernels
from simulator.engine.operands import kv_scale_group, operand_elements, operand_rows, pruned
from simulator.engine.steps import Lowered, Step, evolve_step
from simulator.formats.precision import Precision, compute_format, parse_precision
from simulator.formats.scales import carries_scales, same_blocks, takes_scales
from simulator.formats.sparsity import SparsityPattern
from simulator.plan.binding import Plan
from simulator.spec.precision_config import PrecisionConfig
from simulator.spec.run_config import PRUNED_OPERAND
from simulator.units import ceil_div
from workloads.errors import InputError
from workloads.ops import Op, Tensor, Trace, evolve
from workloads.vocabulary import COLLECTIVE_KIND

# The formats an ideal array would have, to say which product a preset computes wider than it needs.
_ANY_ARRAY = [parse_precision(name) for name in ("fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "int16", "int8",
                                                 "int4", "int2")]


def lower(trace: Trace, plan: Plan) -> Lowered:
    """The steps of ``trace`` under ``plan`` (a run config bound to a hardware), in passes over one
    context: the tensors' stored formats (KV caches included), then each op in turn (its compute format,
    its operands' conversions, cache appends and N:M selection, its weights' dequantization, the matrix
    step and its epilogue), then the checks that need the whole pass."""
    context = _Lowering(trace, plan)
    context.store_tensors()
    for op in trace:
        if op.held:  # stored weights no work of this pass reads: no step
            continue
        if op.is_matrix:
            context.matrix_op(op)
        else:  # a collective moves activations in their format (the SFU's) between chips
            unit = "link" if op.kind == COLLECTIVE_KIND else "sfu"
            context.steps.append(Step(op, unit, False, context.sfu, op.reads, op.writes))
    context.check_per_token()
    on_chip = mark_kernels(context.steps, context.tensors, plan)
    return Lowered(tuple(context.steps), context.tensors, context.appends, tuple(context.notes),
                   frozenset(context.filter_streams), frozenset(on_chip))


@dataclass
class _Formats:
    """What one matrix op computes in, and how its operands and output get there."""

    operands: list[Precision]  # A (and B of a BMM) as the op reads them
    weights: Precision | None
    second: Precision  # B's stored format (the weights', or a BMM's second operand's before any widening)
    compute: Precision
    described: str  # "int4 x fp16": the stored formats, for notes and the step's ``operands``


class _Lowering:
    """The context the passes share: the tensor table, the steps so far, and what was converted once."""

    def __init__(self, trace: Trace, plan: Plan) -> None:
        self.trace, self.plan = trace, plan
        self.hardware, self.policy = plan.hardware, plan.policy
        self.sfu = self.hardware.sfu_precision
        self.spec = self.policy.config.precision
        self.in_pe = {parse_precision(name) for name in self.hardware.dequantize_in_pe}
        self.tensors: dict[str, Tensor] = {}
        self.notes: dict[str, None] = {}
        self.steps: list[Step] = []
        self.converted: dict[tuple[str, Precision, int], str] = {}  # (activation, format, elements) -> its copy
        self.appends: dict[str, str] = {}
        self.filter_streams: set[str] = set()
        self.selected: dict[str, str] = {}  # activation -> its pruned copy
        self.scaled_scores: set[str] = set()  # Q K^T products whose scores the cache's scales multiply
        self.pe_dequantized: set[str] = set()  # products whose B operand the PEs dequantize (dequantize_in_pe)
        self.state_format: dict[str, Precision] = {}
        self.filled_by: dict[str, str] = {}
        self.per_token = self.spec.activation_scales.per == "token"
        outliers = self.policy.config.outliers
        self.outlier_dims = outliers.dims if outliers is not None else 0
        self.outlier_format = parse_precision(outliers.precision) if outliers is not None else self.sfu

    # --- pass 1: stored formats ---------------------------------------------------------------------

    def attention_sparsity(self, op: Op) -> tuple[SparsityPattern, SparsityPattern] | None:
        pattern, runs_at, note = self.plan.attention_sparsity(op)
        if note is not None:
            self.notes[note] = None
        return (pattern, runs_at) if pattern is not None and runs_at is not None else None

    def store_tensors(self) -> None:
        """Activations and inputs in the SFU's format; a KV cache in ``precision.kv_cache``, else in the
        activation format of the first matrix op that reads it (a decode step) or reads the activation
        that fills it (a prefill)."""
        tensors, sfu = self.tensors, self.sfu
        for name, tensor in self.trace.tensors.items():
            bits = tensor.bits or (sfu.bits if tensor.kind in ("input", "activation") else 0)
            tensors[name] = tensor if bits == tensor.bits else evolve(tensor, bits=bits)
        self.filled_by = {t.source: name for name, t in tensors.items() if t.kind == "state" and t.source}
        sequences = int(self.trace.workload.get("batch", 1))
        for op in self.trace:
            for index, name in enumerate(op.reads[: 2 if op.kind == "bmm" else 1] if op.is_matrix else ()):
                state = name if tensors[name].kind == "state" else self.filled_by.get(name)
                if state is not None and state not in self.state_format:
                    self.store_cache(state, op, index, tensors[state].sequences or sequences)
        for name, tensor in tensors.items():
            if tensor.kind == "state" and name not in self.state_format:
                tensors[name] = evolve(tensor, bits=sfu.bits)

    def store_cache(self, state: str, op: Op, index: int, sequences: int) -> None:
        """The KV cache ``state``, first read by operand ``index`` of ``op``: its format with a block
        format's own scales, the per-head or per-token scales on top and, for pruned keys, the pattern it
        keeps them compressed in."""
        spec = self.spec
        kv = self.state_format[state] = self.policy.kv_cache_precision(op)
        scales = spec.effective_kv_scales(kv) if spec.kv_cache is not None else None
        coarse = kv_scale_group(self.tensors[state], op, scales.per, sequences) if scales else 0
        block = kv.block
        self.tensors[state] = replace(
            self.tensors[state], bits=kv.bits, scale_group=block.block if block else 0,
            scale_bits=block.scale_bits if block else 0, coarse_scale_group=coarse,
            coarse_scale_bits=scales.scale_bits + scales.zero_point_bits if scales and coarse else 0)
        sparse = self.attention_sparsity(op) if PRUNED_OPERAND.get(op.role) == index else None
        if sparse is not None:  # pruned keys: the cache keeps them compressed
            self.tensors[state] = pruned(self.tensors[state], sparse[0], op.k)

    # --- building blocks: tensors and inserted steps ------------------------------------------------

    def add_tensor(self, name: str, elements: int, bits: int, scale_group: int = 0, scale_bits: int = 0) -> str:
        self.tensors[name] = Tensor(name, "activation", elements, bits=bits, scale_group=scale_group,
                                    scale_bits=scale_bits)
        return name

    def sfu_step(self, op: Op, role: str, suffix: str, elements: int, reads: tuple[str, ...],
                 writes: tuple[str, ...]) -> None:
        inserted = Op(f"{op.name}.{suffix}", op.layer, role, op.group, "vector", elements=elements)
        self.steps.append(Step(inserted, "sfu", True, self.sfu, reads, writes))

    def convert(self, op: Op, suffix: str, source: str, elements: int, fmt: Precision,
                rows: tuple[int, int] | None) -> str:
        """``elements`` of the activation ``source`` in ``fmt``: itself, the copy an earlier step made, or a
        new quantize step's output (after an absmax step finding per-token scales, when ``rows`` gives the
        tokens and the config asks for them)."""
        if fmt == self.sfu:
            return source
        key = (source, fmt, elements)
        if key not in self.converted:
            token_rows = rows if self.per_token and takes_scales(fmt) else None  # (tokens, elements per token)
            group, scale_bits = (token_rows[1], self.spec.activation_scales.scale_bits) if token_rows else (0, 0)
            per_group = self.spec.activation_scales.group_size
            if token_rows and per_group:  # one scale per group of channels of each token
                group = min(per_group, token_rows[1])
                token_rows = (token_rows[0] * ceil_div(token_rows[1], group), group)
            if fmt.block is not None:  # MX/NVFP4: the block scales travel with the elements
                group, scale_bits = fmt.block.block, fmt.block.scale_bits
            self.converted[key] = self.add_tensor(f"{op.name}.{suffix}", elements, fmt.bits, group, scale_bits)
            reads: tuple[str, ...] = (source,)
            if token_rows:
                scales = self.add_tensor(f"{op.name}.{suffix}_scales", token_rows[0], scale_bits)
                self.sfu_step(op, "absmax", f"{suffix}_absmax", elements, (source,), (scales,))
                reads = (source, scales)
            self.sfu_step(op, "quantize", suffix, elements, reads, (self.converted[key],))
        return self.converted[key]

    def dequantize(self, op: Op, suffix: str, source: str, elements: int, fmt: Precision,
                   kept: SparsityPattern | None = None) -> str:
        """A stored operand (weights, a quantized cache) dequantized into ``fmt`` by the vector unit, tile by
        tile on its way into the filter buffer. A pruned one (a ``kept`` pattern along K, or a pruned
        cache) stays compressed: only its kept values are scaled, for PEs that skip the rest."""
        stored = self.tensors[source]
        if kept is None and stored.nm_group:
            kept = SparsityPattern(stored.nm_kept, stored.nm_group)
        out = self.add_tensor(f"{op.name}.{suffix}", elements, fmt.bits)
        if kept is not None:
            self.tensors[out] = pruned(self.tensors[out], kept, op.k)
        self.sfu_step(op, "dequantize", suffix, self.tensors[out].values_of(elements), (source,), (out,))
        self.filter_streams.add(out)
        return out

    def select(self, op: Op, suffix: str, source: str, pattern: SparsityPattern) -> str:
        """The N:M-pruned copy of the activation ``source`` along rows of ``op.k`` (the product's K): the
        vector unit keeps the N largest of every M values and writes them compressed, with positions."""
        if source not in self.selected:
            tensor = self.tensors[source]
            out = self.selected[source] = f"{op.name}.{suffix}"
            self.tensors[out] = pruned(replace(tensor, name=out, kind="activation"), pattern, op.k)
            self.sfu_step(op, "nm_select", suffix, tensor.elements, (source,), (out,))
        return self.selected[source]

    def outlier_product(self, op: Op, rows: int, source: str, out_elements: int) -> str:
        """The ``rows`` outlier input dimensions of a weight matrix times the activation's matching columns,
        at the outlier precision, as a step of its own; its output, which the main product's adds."""
        product = Op(f"{op.name}.outliers", op.layer, op.role, op.group, op.kind, batch=op.batch, m=op.m, k=rows,
                     n=op.n)
        fmt = self.hardware.compute_precision(self.outlier_format)
        operand = self.convert(product, "quantize", source, op.batch * op.m * rows, self.outlier_format, None)
        result = self.add_tensor(f"{product.name}.result", out_elements, fmt.bits)
        self.steps.append(Step(product, "array", True, fmt, (operand,), (result,), str(self.outlier_format)))
        return result

    # --- pass 2: each matrix op -----------------------------------------------------------------------

    def matrix_op(self, op: Op) -> None:
        """One matrix op: its formats, its operands' conversions, its weights' dequantization, the array
        step, and the epilogue that brings its output back to the SFU's format."""
        sparse = self.attention_sparsity(op) if op.kind == "bmm" else None
        formats = self.formats(op)
        outlier_rows = self.outlier_dims if formats.weights is not None else 0
        stored_as = None
        if outlier_rows:  # the outlier rows of K are a product of their own, at their precision
            stored_as, op = op, replace(op, k=op.k - outlier_rows)
        reads = self.operand_reads(op, formats, sparse)
        operands = len(formats.operands)
        weights, compute = formats.weights, formats.compute
        scaled_weights = (weights is not None and _scales_along_k(weights, self.spec) and weights != compute
                          and not same_blocks(weights, compute))
        if scaled_weights and weights in self.in_pe:
            self.pe_dequantized.add(op.name)
        if scaled_weights and weights not in self.in_pe:  # group/block scales vary along K: applied per weight
            kept = self.plan.compressed_pattern(op)  # N:M weights the PEs skip stay compressed
            reads[operands] = self.dequantize(op, "dequantize_w", reads[operands], op.batch * op.k * op.n, compute,
                                              kept)
        # The output leaves the array in the SFU's format, or is dequantized (scaled) into it.
        converts = (compute != self.sfu or formats.operands[0] != self.sfu or op.name in self.scaled_scores
                    or (weights is not None and not scaled_weights and carries_scales(weights)))
        same = formats.second == formats.operands[0] == compute
        described_step = str(compute) if same else formats.described.replace(" x ", "/")
        pattern, runs_at = sparse if sparse is not None else (None, None)
        step = Step(op, "array", False, compute, tuple(reads), op.writes, described_step, stored_as, pattern,
                    runs_at, op.name in self.pe_dequantized)
        self.epilogue(step, operands, converts, outlier_rows)

    def formats(self, op: Op) -> _Formats:
        """The formats ``op``'s operands are read in and the array computes in (noting a wider unit)."""
        activations = self.policy.activation_precision(op)
        weights = self.policy.weight_precision(op) if op.has_weight_operand else None
        operands = [activations] * (2 if op.kind == "bmm" else 1)
        if len(operands) == 2 and self.tensors[op.reads[1]].kind == "state":
            operands[1] = self.state_format[op.reads[1]]
        second = weights if weights is not None else operands[1]
        compute = self.hardware.compute_precision(second, operands[0])
        ideal = compute_format(second, operands[0], [*_ANY_ARRAY, second, operands[0]])
        described = str(second) if second == operands[0] else f"{second} x {operands[0]}"
        if compute != ideal:
            self.notes[f"{described} runs at {compute} on {self.hardware.name} (no {ideal} MAC units)"] = None
        if activations.block is not None and compute != activations:  # no unit applies their block scales
            self.notes[f"{activations} activations stay in {compute} on {self.hardware.name} (it has no "
                       f"{activations} units to apply their block scales)"] = None
            operands = [compute if fmt.block is not None else fmt for fmt in operands]
        return _Formats(operands, weights, second, compute, described)

    def operand_reads(self, op: Op, formats: _Formats, sparse: tuple[SparsityPattern, SparsityPattern] | None,
                      ) -> list[str]:
        """What the array step reads: each activation operand converted (and N:M-selected), a decode
        step's cache with its new entries appended, a prefill's cache written as it is filled."""
        reads = list(op.reads)
        pruned_index = PRUNED_OPERAND[op.role] if sparse is not None else -1
        pattern = sparse[0] if sparse is not None else None
        operands = len(formats.operands)
        for index in range(operands):
            name = reads[index]
            tensor = self.tensors[name]
            suffix = "quantize" if operands == 1 else ("quantize_a", "quantize_b")[index]
            selected = pattern if index == pruned_index else None
            if tensor.kind == "state":  # a decode step: only the new entries are converted and appended
                self.append_to_cache(op, name, suffix, selected)
                reads[index] = self.read_cache(op, index, reads, formats)
                continue
            reads[index] = self.convert(op, suffix, name, operand_elements(op, index), formats.operands[index],
                                        operand_rows(op, index))
            if selected is not None:
                reads[index] = self.select(op, suffix.replace("quantize", "select"), reads[index], selected)
            self.fill_cache(op, name, suffix, selected)
        return reads

    def read_cache(self, op: Op, index: int, reads: list[str], formats: _Formats) -> str:
        """The quantized cache ``reads[index]`` as the array reads it. Block scales (MX, NVFP4) change along
        the product: the vector unit dequantizes the cache unless the array's units apply them. Per-head and
        per-token scales are constant along a head's vector: in Q K^T, whose reduction that vector is, each
        scales one score (in the product's epilogue); in P V, which reduces over tokens, they fold into the
        probabilities (one multiply each, before the product)."""
        name, stored, compute = reads[index], formats.operands[index], formats.compute
        cache = self.tensors[name]
        if stored in self.in_pe:
            if cache.scale_group or cache.coarse_scale_group:
                self.pe_dequantized.add(op.name)
            return name
        if cache.scale_group and not same_blocks(stored, compute):
            return self.dequantize(op, "dequantize_b", name, operand_elements(op, index), compute)
        if cache.coarse_scale_group and op.role == "bmm_qk":
            self.scaled_scores.add(op.name)
        elif cache.coarse_scale_group:
            probabilities = self.tensors[reads[0]]
            folded = f"{op.name}.kv_scaled"
            self.tensors[folded] = replace(probabilities, name=folded, kind="activation")
            self.sfu_step(op, "mul", "kv_scales", operand_elements(op, 0), (reads[0],), (folded,))
            reads[0] = folded
        return name

    def append_to_cache(self, op: Op, state: str, suffix: str, selected: SparsityPattern | None) -> None:
        """A decode step's new cache entries, converted from the activation that holds them (and selected)."""
        tensor = self.tensors[state]
        if not tensor.source:
            return
        group = tensor.coarse_scale_group
        rows = (tensor.appended // group, group) if group else None
        self.appends[state] = self.convert(op, suffix, tensor.source, tensor.appended, self.state_format[state], rows)
        if selected is not None:
            self.appends[state] = self.select(op, f"{suffix}_select", self.appends[state], selected)

    def fill_cache(self, op: Op, name: str, suffix: str, selected: SparsityPattern | None) -> None:
        """A prefill writes the cache that ``name`` fills as it is filled, in the cache's format."""
        state = self.filled_by.get(name)
        if state is None or state in self.appends:
            return
        cache = self.tensors[state]
        elements = min(self.tensors[name].elements, cache.elements)  # a windowed cache keeps the last tokens
        group = cache.coarse_scale_group
        rows = (elements // group, group) if group else None
        self.appends[state] = self.convert(op, f"{suffix}_cache", name, elements, self.state_format[state], rows)
        if selected is not None:
            self.appends[state] = self.select(op, f"{suffix}_cache_select", self.appends[state], selected)

    def epilogue(self, step: Step, operands: int, converts: bool, outlier_rows: int) -> None:
        """The array step, and after it what its output needs: a dequantize into the SFU's format, the
        outlier product's add, the bias add (each an SFU step; the last writes the op's output)."""
        op, compute, reads = step.op, step.precision, step.reads
        epilogue = [role for role, needed in (("dequantize", converts), ("add", bool(outlier_rows)),
                                              ("bias", bool(op.bias_params))) if needed]
        if not epilogue:
            self.steps.append(step)
            return
        out_elements = op.batch * op.m * op.n
        weight_reads = tuple(name for name in reads[operands:] if not name.endswith(".bias"))
        biases = tuple(name for name in reads[operands:] if name.endswith(".bias"))
        out_bits = self.hardware.accumulator_bits if converts and not compute.is_float else compute.bits
        current = self.add_tensor(f"{op.name}.result", out_elements, out_bits)
        self.steps.append(evolve_step(step, reads=(*reads[:operands], *weight_reads), writes=(current,)))
        extras = {"bias": biases}
        if outlier_rows:
            extras["add"] = (self.outlier_product(op, outlier_rows, op.reads[0], out_elements),)
        for position, role in enumerate(epilogue):
            last = position == len(epilogue) - 1
            writes = op.writes if last else (self.add_tensor(f"{op.name}.{role}ed", out_elements, self.sfu.bits),)
            self.sfu_step(op, role, "outliers_add" if role == "add" else role, out_elements,
                          (current, *extras.get(role, ())), writes)
            current = writes[0]

    # --- pass 3: checks over the whole pass -------------------------------------------------------------

    def check_per_token(self) -> None:
        if self.per_token and not any(step.op.role == "absmax" for step in self.steps):
            raise InputError(f"{self.policy.name}: precision.activation_scales per token does not apply: no "
                             f"activation of {self.trace.model} is quantized to an integer or FP8 format on "
                             f"{self.hardware.name}")


def _scales_along_k(weights: Precision, spec: PrecisionConfig) -> bool:
    """Whether ``weights`` carry scales that change along K (groups, MX/NVFP4 blocks)."""
    if weights.block is not None:
        return True
    return carries_scales(weights) and spec.effective_weight_scales.per in ("group", "block")
