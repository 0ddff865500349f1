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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from workloads.errors import InputError
from workloads.hf_naming import block_index, group_of, matrix_role
from workloads.models import ModelSpec, Workload
from workloads.ops import BMM_ROLES, Op, Trace

try:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
except ImportError:  # pragma: no cover - exercised only without the hf extra
    torch = None
    TorchDispatchMode = object

# Module classes recorded as one vector op (their inner element-wise ops are not recorded).
_MODULE_ROLES = {
    "LayerNorm": "layernorm",
    "T5LayerNorm": "layernorm",
    "GELUActivation": "gelu",
    "NewGELUActivation": "gelu",
    "GELU": "gelu",
    "ReLU": "relu",
    "Tanh": "tanh",
}
_ELEMENTWISE_ROLES = {
    "aten._softmax.default": "softmax",
    "aten.gelu.default": "gelu",
    "aten.relu.default": "relu",
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


class _Recorder(TorchDispatchMode):
    """Records matrix and element-wise ops, each named after the innermost module running it."""

    def __init__(self, encoder_blocks: int, per_token: int) -> None:
        super().__init__()
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
            **sizes: int) -> None:
        layer = block_index(path, self.encoder_blocks)
        self.ops.append(Op(self._unique(name), layer, role, group_of(role, path, layer), kind,
                           weight_params=params[0], bias_params=params[1], **sizes))

    def _matrix(self, kind: str, batch: int, m: int, k: int, n: int) -> None:
        path, module = self.stack[-1] if self.stack else ("model", None)
        if kind == "bmm":
            attention = next((p for p, mod in reversed(self.stack) if "Attention" in type(mod).__name__), path)
            count = self.bmms.get(attention, 0)
            self.bmms[attention] = count + 1
            role = BMM_ROLES[count % 2]
            self.add(f"{attention}.{role}", role, attention, "bmm", batch=batch, m=m, k=k, n=n)
            return
        role = matrix_role(path, kind)
        params = self.claim(module) if module is not None else (0, 0)
        self.add(path, role, path, kind, params, batch=batch, m=m, k=k, n=n)

    def vector(self, role: str, elements: int, module_level: bool = False) -> None:
        path, module = self.stack[-1] if self.stack else ("model", None)
        owns = module is not None and (module_level or role == "embedding")
        params = self.claim(module) if owns else (0, 0)
        self.add(path if module_level else f"{path}.{role}", role, path, "vector", params, elements=elements)

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
            self.ops.append(Op(self._unique(f"{path}.parameters"), layer, role, group_of(role, path, layer),
                               "vector", elements=0, weight_params=sum(p.numel() for p in own)))

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = str(func)
        if name in ("aten.mm.default", "aten.addmm.default"):  # addmm(bias, A, B) = A @ B + bias
            a, b = (args[0], args[1]) if name == "aten.mm.default" else (args[1], args[2])
            self._matrix("gemm", 1, a.shape[0], a.shape[1], b.shape[1])
        elif name in ("aten.bmm.default", "aten.baddbmm.default"):
            a, b = (args[0], args[1]) if name == "aten.bmm.default" else (args[1], args[2])
            self._matrix("bmm", a.shape[0], a.shape[1], a.shape[2], b.shape[2])
        elif name == "aten.convolution.default":
            x, w = args[0], args[1]
            groups = args[8]
            out_positions = out.numel() // (out.shape[0] * out.shape[1])
            k = w.shape[1] * _prod(w.shape[2:])
            self._matrix("conv", groups, x.shape[0] * out_positions, k, w.shape[0] // groups)
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
                self.vector(_ELEMENTWISE_ROLES[name], out.numel())
        return out


def _prod(values: Any) -> int:
    result = 1
    for v in values:
        result *= int(v)
    return result


@contextlib.contextmanager
def _module_hooks(model: Any, recorder: _Recorder) -> Iterator[None]:
    """Keep the recorder's module stack, reset each attention call's BMM count, and record norms and
    activations at module level (one op, whatever element-wise ops they are written with)."""
    handles = []

    def pre_hook(path: str, module: Any) -> None:
        recorder.stack.append((path, module))
        recorder.bmms.pop(path, None)
        if type(module).__name__ in _MODULE_ROLES:
            recorder.suppress_depth += 1

    def post_hook(module: Any, output: Any) -> None:
        if type(module).__name__ in _MODULE_ROLES:
            recorder.suppress_depth -= 1
            if recorder.suppress_depth == 0:
                recorder.vector(_MODULE_ROLES[type(module).__name__], output.numel(), module_level=True)
        recorder.stack.pop()

    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda mod, inputs, path=path: pre_hook(path, mod)))
        handles.append(module.register_forward_hook(lambda mod, inputs, output: post_hook(mod, output)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def require_torch() -> None:
    if torch is None:
        raise InputError("tracing needs the hf extra: pip install 'accelsim[hf]' (torch==2.13.0, transformers)")


def build_hf_model(spec: ModelSpec, workload: Workload) -> Any:
    """Instantiate the transformers model that matches ``spec`` and its head, on the meta device."""
    require_torch()
    import transformers

    try:
        config = transformers.AutoConfig.for_model(**spec.config)
    except (ValueError, KeyError) as exc:
        raise InputError(f"{spec.name}: transformers cannot build model_type {spec.config['model_type']!r} "
                         f"({' '.join(str(exc).split())[:160]})") from None
    config._attn_implementation = "eager"  # SDPA would fuse both attention BMMs into one op
    cls_name = spec.hf_class(workload.head)
    cls = getattr(transformers, cls_name)
    with torch.device("meta"):
        if cls_name.startswith("Auto"):
            model = cls.from_config(config)
        elif cls_name in ("BertModel", "RobertaModel", "ViTModel"):
            model = cls(config, add_pooling_layer=workload.head == "pooler")
        else:
            model = cls(config)
    return model.eval()


def hf_num_parameters(spec: ModelSpec, workload: Workload) -> int:
    return int(build_hf_model(spec, workload).num_parameters())


def trace_hf(spec: ModelSpec, workload: Workload) -> Trace:
    """Run one forward pass of the real model on meta tensors and record the executed ops."""
    model = build_hf_model(spec, workload)
    inputs, warmup = spec.hf_inputs(workload, torch)
    with torch.no_grad():
        if warmup is not None:
            inputs = warmup(model, inputs)
        tokens = max(workload.tokens or 1, workload.decoder_tokens or 1)
        recorder = _Recorder(_encoder_blocks(model), per_token=workload.batch * tokens)
        with _module_hooks(model, recorder), recorder:
            model(**inputs)
        recorder.leftover_parameters(model)
    if recorder.unmapped and not spec.has_closed_form:
        # A zoo family's closed form is tested to cover what its trace runs; elsewhere, element-wise
        # work accelsim has no vector-unit role for would be left out of the time: refuse instead.
        raise InputError(f"{spec.name}: the traced model runs element-wise ops accelsim has no vector-unit role "
                         f"for yet ({', '.join(sorted(recorder.unmapped))}); it cannot be simulated faithfully")
    return Trace(spec.name, tuple(recorder.ops), workload.as_dict())


def _encoder_blocks(model: Any) -> int:
    """Blocks of the encoder stack (decoder blocks are numbered after them); 0 without one."""
    indices = {block_index(path, 0) for path, _ in model.named_modules() if "decoder" not in path.split(".")}
    return max(indices, default=-1) + 1
