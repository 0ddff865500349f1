"""Trace a real Hugging Face ``transformers`` model into the accelsim op schema (``hf`` extra).

The model is built from its config on the meta device (no weights, no hub access) and one forward
pass is recorded with a ``TorchDispatchMode``. Matrix ops are taken from ``aten.mm/addmm/bmm/
baddbmm/convolution`` (``aten.linear``/``matmul`` decompose into these before dispatch). Norms and
activations are recorded at module level, so that an RMSNorm or a tanh-GELU written as several
element-wise aten ops still counts as one op. Every op is named after the module that ran it, with
its block index, role and group from the module path (:mod:`workloads.hf_naming`), and owns the
parameters of that module (each tensor once, so tied weights count once and the total equals
``num_parameters()``). Traced ops are the reference the closed-form traces are tested against, and
``accelsim run --trace`` simulates them.

Tensors keep their identity: each recorded op writes a tensor named after it, and reads the tensors
its arguments come from, followed through views, copies and splits (a split of an op's output makes
that op write the parts); parameters are weight tensors (a tied one is one tensor) and the forward
pass's arguments are inputs. A concatenation of a tensor from outside the pass (a KV cache from the
previous step) with one the pass computed is state appended with the new part; a tensor from outside
the pass that an attention product reads as it is (a cached cross-attention key or value) is state
the pass only reads.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from workloads.attention_geometry import AttentionGeometry
from workloads.errors import InputError
from workloads.hf_hooks import module_hooks, rotary_hook
from workloads.hf_model import build_hf_model, refused_by_transformers
from workloads.hf_naming import block_index, group_of, matrix_role
from workloads.models import ModelSpec, Workload
from workloads.ops import Op, Tensor, Trace
from workloads.vocabulary import BMM_ROLES

try:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
except ImportError:  # pragma: no cover - exercised only without the hf extra
    torch = None  # type: ignore[assignment]  # hf_model.require_torch() refuses every use with a one-line hint
    TorchDispatchMode = object  # type: ignore[assignment,misc]

_ELEMENTWISE_ROLES = {
    "aten._softmax.default": "softmax",
    "aten.gelu.default": "gelu",
    "aten.relu.default": "relu",
    "aten.silu.default": "silu",
    "aten.tanh.default": "tanh",
    "aten.add.Tensor": "add",
    "aten.add_.Tensor": "add",
    "aten.mul.Tensor": "mul",
    "aten.div.Tensor": "mul",
    "aten.embedding.default": "embedding",
}


# aten ops (by overload packet) that move, index, build or compare data: no vector-unit compute.
_NOT_COMPUTE = {f"aten.{op}" for op in (
    "view", "_unsafe_view", "_reshape_alias", "reshape", "transpose", "t", "permute", "expand", "slice", "select",
    "unsqueeze", "squeeze", "unbind", "split", "split_with_sizes", "chunk", "narrow", "as_strided", "alias",
    "clone", "copy_", "_to_copy", "contiguous", "detach", "lift_fresh", "cat", "stack", "repeat", "flip", "roll",
    "arange", "zeros", "ones", "full", "empty", "new_zeros", "new_ones", "new_empty", "zeros_like", "ones_like",
    "full_like", "empty_like", "scalar_tensor", "fill", "fill_", "zero_", "masked_fill", "masked_fill_", "where",
    "index", "index_select", "gather", "triu", "tril", "native_dropout", "dropout")}


_RECORDED = {"aten.mm.default", "aten.addmm.default", "aten.bmm.default", "aten.baddbmm.default",
             "aten.convolution.default"}


class _Recorder(TorchDispatchMode):
    """Records matrix and element-wise ops, each named after the innermost module running it."""

    def __init__(self, encoder_blocks: int, per_token: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch's dispatch mode has no annotations
        # unmapped ops producing at most one value per token are per-token bookkeeping (positions from a
        # mask's cumulative sum, ...), not vector work on activations
        self.per_token = per_token
        self.ops: list[Op] = []
        self.suppress_depth = 0
        self.encoder_blocks = encoder_blocks
        self.stack: list[tuple[str, Any]] = []  # (module path, module) of the modules running now
        self.names: dict[str, int] = {}
        self.bmms: dict[str, int] = {}  # attention module path -> BMMs recorded in its current call
        self.claimed: set[int] = set()  # parameters already owned by an op (tied weights count once)
        self.unmapped: set[str] = set()  # element-wise compute with no SFU role (refused without a closed form)
        self.tensor_names: dict[int, str] = {}  # id(torch tensor) -> trace tensor it holds (or a view of)
        self.held: list[Any] = []  # the tensors named above, kept alive so that their ids are not reused
        self.tensors: dict[str, Tensor] = {}
        self.writer: dict[str, int] = {}  # activation -> index of the op writing it
        self.read: set[str] = set()

    def declare(self, value: Any, tensor: Tensor) -> None:
        self.tensors[tensor.name] = tensor
        self.tensor_names[id(value)] = tensor.name
        self.held.append(value)

    def alias(self, value: Any, of: Any) -> None:
        """``value`` holds the same trace tensor as ``of`` (the sin table next to the cos one)."""
        name = self.name_of(of)
        if name is not None:
            self.tensor_names[id(value)] = name
            self.held.append(value)

    def name_of(self, value: Any) -> str | None:
        return self.tensor_names.get(id(value)) if isinstance(value, torch.Tensor) else None

    def reads_of(self, values: Any) -> tuple[str, ...]:
        names = (self.name_of(v) for v in values)
        return tuple(dict.fromkeys(name for name in names if name is not None))

    def follow(self, func: Any, args: tuple[Any, ...], out: Any) -> None:
        """An op that is not recorded: its output holds (a view, copy or part of) its first named input."""
        if func.overloadpacket is torch.ops.aten.cat and self._cat(list(args[0]), out):
            return
        names = [n for a in _flat(args) if (n := self.name_of(a)) is not None]
        if not names:
            return
        # an activation rather than a weight it is joined with
        name = next((n for n in names if self.tensors[n].kind != "weight"), names[0])
        outputs = list(out) if isinstance(out, list | tuple) else [out]
        outputs = [o for o in outputs if isinstance(o, torch.Tensor)]
        splits = str(func.overloadpacket) in ("aten.split", "aten.split_with_sizes", "aten.chunk", "aten.unbind")
        if splits and len(outputs) > 1 and self._split(name, outputs):
            return
        for value in outputs:
            self.tensor_names[id(value)] = name
            self.held.append(value)

    def _split(self, name: str, parts: list[Any]) -> bool:
        """An op's unread output split into parts: that op writes the parts (a fused q/k/v projection)."""
        if name not in self.writer or name in self.read or self.ops[self.writer[name]].writes != (name,):
            return False
        index = self.writer[name]
        names = tuple(f"{name}.{i}" for i in range(len(parts)))
        for part, value in zip(names, parts, strict=True):
            self.declare(value, Tensor(part, "activation", value.numel()))
            self.writer[part] = index
        del self.tensors[name], self.writer[name]
        self.ops[index] = replace(self.ops[index], writes=names)
        return True

    def _cat(self, values: list[Any], out: Any) -> bool:
        """Cache entries from before the pass concatenated with new ones: state appended with the new."""
        named = [v for v in values if self.name_of(v) is not None]
        before = [v for v in values if self.name_of(v) is None]
        # An empty cache (the first step's) only passes the new entries through.
        source = self.name_of(named[0]) if len(named) == 1 else None
        if (source is not None and len(before) == 1 and before[0].numel() > 0
                and self.tensors[source].kind == "activation"):
            state = f"{source}.cache"
            self.declare(out, Tensor(state, "state", out.numel(), appended=named[0].numel(), source=source))
            return True
        return False

    def parameters_and_inputs(self, model: Any, inputs: dict[str, Any]) -> None:
        for path, param in model.named_parameters():  # tied parameters appear once, under their first name
            self.declare(param, Tensor(path, "weight", param.numel()))
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                bits = 32 if not value.is_floating_point() else 0
                self.declare(value, Tensor(key, "input", value.numel(), bits=bits))

    def _unique(self, name: str) -> str:
        seen = self.names.get(name, 0)
        self.names[name] = seen + 1
        return name if seen == 0 else f"{name}#{seen + 1}"

    def claim(self, module: Any) -> tuple[int, int]:
        """(weight, bias) parameter counts of ``module`` not yet owned by another op."""
        weight = bias = 0
        for name, param in module.named_parameters(recurse=True):
            if id(param) in self.claimed:
                continue
            self.claimed.add(id(param))
            if name.endswith("bias"):
                bias += param.numel()
            else:
                weight += param.numel()
        return weight, bias

    def add(self, name: str, role: str, path: str, kind: str, params: tuple[int, int] = (0, 0),
            reads: tuple[str, ...] = (), out: Any = None, **sizes: int) -> None:
        layer = block_index(path, self.encoder_blocks)
        op = Op(self._unique(name), layer, role, group_of(role, path, layer), kind,
                batch=sizes.get("batch", 0), m=sizes.get("m", 0), k=sizes.get("k", 0), n=sizes.get("n", 0),
                elements=sizes.get("elements", 0), weight_params=params[0], bias_params=params[1], reads=reads)
        self.read.update(reads)
        self.declare(out, Tensor(op.name, "activation", op.output_elements))
        self.writer[op.name] = len(self.ops)
        self.ops.append(replace(op, writes=(op.name,)))

    def _matrix(self, kind: str, operands: tuple[Any, ...], out: Any, batch: int, m: int, k: int, n: int) -> None:
        path, module = self.stack[-1] if self.stack else ("model", None)
        if kind == "bmm":
            attention = next((p for p, mod in reversed(self.stack) if "Attention" in type(mod).__name__), path)
            cached = "k_cache" if self.bmms.get(attention, 0) % 2 == 0 else "v_cache"
            for value in operands[:2]:
                if isinstance(value, torch.Tensor) and self.name_of(value) is None:
                    # from before the pass and read as it is: a cache an earlier pass filled (cross-attention)
                    self.declare(value, Tensor(self._unique(f"{attention}.{cached}"), "state", value.numel()))
        reads = self.reads_of(operands)
        if kind == "bmm":
            count = self.bmms.get(attention, 0)
            self.bmms[attention] = count + 1
            role = BMM_ROLES[count % 2]
            self.add(f"{attention}.{role}", role, attention, "bmm", reads=reads, out=out, batch=batch, m=m, k=k, n=n)
            return
        role = matrix_role(path, kind)
        params = self.claim(module) if module is not None else (0, 0)
        self.add(path, role, path, kind, params, reads=reads, out=out, batch=batch, m=m, k=k, n=n)

    def vector(self, role: str, elements: int, operands: tuple[Any, ...], out: Any, module_level: bool = False) -> None:
        path, module = self.stack[-1] if self.stack else ("model", None)
        owns = module is not None and (module_level or role == "embedding")
        params = self.claim(module) if owns else (0, 0)
        reads = self.reads_of(operands)
        if module_level and module is not None:
            reads += self.reads_of(module.parameters())
        if role == "embedding":  # indices first, then the table, as the closed form names them
            reads = tuple(sorted(reads, key=lambda name: self.tensors[name].kind == "weight"))
        self.add(path if module_level else f"{path}.{role}", role, path, "vector", params, reads=reads, out=out,
                 elements=elements)

    def leftover_parameters(self, model: Any) -> None:
        """Parameters no op used directly (a class token, position tables added as tensors, training-only
        vectors): stored, so owned by a zero-element op of their module, counted once."""
        for path, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if id(p) not in self.claimed]
            if not own:
                continue
            for param in own:
                self.claimed.add(id(param))
            role = "embedding" if any(w in path for w in ("embed", "wpe", "wte", "shared")) else "mask_embed"
            layer = block_index(path, self.encoder_blocks)
            name = self._unique(f"{path}.parameters")
            self.tensors[name] = Tensor(name, "activation", 0)
            self.ops.append(Op(name, layer, role, group_of(role, path, layer), "vector", elements=0,
                               weight_params=sum(p.numel() for p in own), reads=self.reads_of(own), writes=(name,)))

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = str(func)
        if name in ("aten.mm.default", "aten.addmm.default"):  # addmm(bias, A, B) = A @ B + bias
            a, b = (args[0], args[1]) if name == "aten.mm.default" else (args[1], args[2])
            self._matrix("gemm", (a, b, *args[:1 if name != "aten.mm.default" else 0]), out,
                         1, a.shape[0], a.shape[1], b.shape[1])
        elif name in ("aten.bmm.default", "aten.baddbmm.default"):
            a, b = (args[0], args[1]) if name == "aten.bmm.default" else (args[1], args[2])
            self._matrix("bmm", (a, b), out, a.shape[0], a.shape[1], a.shape[2], b.shape[2])
        elif name == "aten.convolution.default":
            x, w = args[0], args[1]
            groups = args[8]
            out_positions = out.numel() // (out.shape[0] * out.shape[1])
            k = w.shape[1] * _prod(w.shape[2:])
            self._matrix("conv", (x, w, args[2]), out, groups, x.shape[0] * out_positions, k, w.shape[0] // groups)
        elif (self.suppress_depth == 0 and name not in _ELEMENTWISE_ROLES
              and str(func.overloadpacket) not in _NOT_COMPUTE
              and isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel() > self.per_token):
            self.unmapped.add(name.removesuffix(".default").removesuffix(".Tensor"))
        if self.suppress_depth == 0 and name in _ELEMENTWISE_ROLES:
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            # A linear layer on a non-contiguous input decomposes into mm + add of its 1-D bias:
            # that add belongs to the GEMM, not to the vector unit's work.
            is_bias_add = name.startswith("aten.add") and any(t.dim() == 1 for t in tensors)
            if isinstance(out, torch.Tensor) and out.is_floating_point() and not is_bias_add:
                self.vector(_ELEMENTWISE_ROLES[name], out.numel(), tuple(args), out)
                return out
        if name not in _RECORDED:
            self.follow(func, tuple(args), out)
        return out


def _prod(values: Any) -> int:
    result = 1
    for v in values:
        result *= int(v)
    return result


def trace_hf(spec: ModelSpec, workload: Workload, *, experts_as_pairs: bool = False) -> Trace:
    """Run one forward pass of the real model on meta tensors and record the executed ops.

    A mixture of experts runs every token-expert pair as one batched product (routing depends on the
    data, which meta tensors do not have): a trace for comparing totals (``experts_as_pairs``), not for
    simulation."""
    if "num_local_experts" in spec.config and not experts_as_pairs:
        raise InputError(f"{spec.name}: expert routing depends on the data, so the traced model runs every "
                         "token-expert pair as one batched product; simulate the closed form (without --trace)")
    model = build_hf_model(spec, workload)
    inputs, warmup = spec.hf_inputs(workload, torch)
    with torch.no_grad():
        if warmup is not None:
            with refused_by_transformers(spec, "cannot run the model of its config"):
                inputs = warmup(model, inputs)
        tokens = max(workload.tokens or 1, workload.decoder_tokens or 1)
        recorder = _Recorder(_encoder_blocks(model), per_token=workload.batch * tokens)
        recorder.parameters_and_inputs(model, inputs)
        with (module_hooks(model, recorder), rotary_hook(model, recorder), recorder,
              refused_by_transformers(spec, "cannot run the model of its config")):
            model(**inputs)
        recorder.leftover_parameters(model)
    if recorder.unmapped and not spec.has_closed_form:
        # A zoo family's closed form is tested to cover what its trace runs; elsewhere, element-wise
        # work accelsim has no vector-unit role for would be left out of the time: refuse instead.
        raise InputError(f"{spec.name}: the traced model runs element-wise ops accelsim has no vector-unit role "
                         f"for yet ({', '.join(sorted(recorder.unmapped))}); it cannot be simulated faithfully")
    used = {name for op in recorder.ops for name in (*op.reads, *op.writes)}
    used |= {recorder.tensors[name].source for name in used if recorder.tensors[name].source}
    tensors = {name: tensor for name, tensor in recorder.tensors.items() if name in used}
    ops = tuple(recorder.ops)
    if spec.has_closed_form:
        ops = with_attention_geometry(ops, spec.trace(workload))
    return Trace(spec.name, ops, workload.as_dict(), tensors)


def with_attention_geometry(ops: tuple[Op, ...], closed: Trace) -> tuple[Op, ...]:
    """The traced ops with the attention geometry of the closed form's attentions, in order: the traced
    products keep their own layout (Hugging Face repeats grouped keys and values per query head), the mask
    and the stack are the closed form's. The score-sized vector ops between a Q K^T and its P V take it too.
    A traced model whose attentions do not line up with the closed form's keeps none (it runs materialized)."""
    facts = [op.attention for op in closed if op.role == "bmm_qk" and op.attention is not None]
    if sum(op.role == "bmm_qk" for op in ops) != len(facts):
        return ops
    remaining = iter(facts)
    current: AttentionGeometry | None = None
    scores = 0
    marked = []
    for op in ops:
        if op.role == "bmm_qk":
            fact = next(remaining)
            current = AttentionGeometry(op.batch, op.m // fact.queries, fact.queries, op.k, fact.causal, fact.window,
                                        fact.decoder) if op.m % fact.queries == 0 else None
            scores = op.output_elements
        if current is not None and (op.kind == "bmm" or (op.kind == "vector" and op.elements == scores)):
            op = replace(op, attention=current)
        if op.role == "bmm_av":
            current = None
        marked.append(op)
    return tuple(marked)


def _encoder_blocks(model: Any) -> int:
    """Blocks of the encoder stack (decoder blocks are numbered after them); 0 without one."""
    indices = {block_index(path, 0) for path, _ in model.named_modules() if "decoder" not in path.split(".")}
    return max(indices, default=-1) + 1


def _flat(args: tuple[Any, ...]) -> list[Any]:
    """Positional arguments with lists of tensors (cat, stack) opened up."""
    flat: list[Any] = []
    for arg in args:
        flat.extend(arg if isinstance(arg, list | tuple) else [arg])
    return flat
