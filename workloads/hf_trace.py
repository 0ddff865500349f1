"""Trace a real Hugging Face ``transformers`` model into the accelsim op schema (``hf`` extra).

The model is built from its config on the meta device (no weights, no hub access) and one forward
pass is recorded with a ``TorchDispatchMode``. Matrix ops are taken from ``aten.mm/addmm/bmm/
baddbmm/convolution`` (``aten.linear``/``matmul`` decompose into these before dispatch). Norms and
activations are recorded at module level, so that an RMSNorm or a tanh-GELU written as several
element-wise aten ops still counts as one op. The traced ops carry generic names and roles: they are
the reference that the closed-form traces in :mod:`workloads.models` are tested against.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from workloads.errors import InputError
from workloads.models import ModelSpec, Workload
from workloads.ops import Op, Trace

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


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []
        self.suppress_depth = 0

    def _matrix(self, kind: str, batch: int, m: int, k: int, n: int) -> None:
        self.ops.append(Op(f"traced.{len(self.ops)}", -1, kind, "attention", kind, batch=batch, m=m, k=k, n=n))

    def vector(self, role: str, elements: int) -> None:
        self.ops.append(Op(f"traced.{len(self.ops)}", -1, role, "attention", "vector", elements=elements))

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
        elif self.suppress_depth == 0 and name in _ELEMENTWISE_ROLES:
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
def _module_level_ops(model: Any, recorder: _Recorder) -> Iterator[None]:
    handles = []

    def pre_hook(module: Any, inputs: Any) -> None:
        recorder.suppress_depth += 1

    def post_hook(module: Any, inputs: Any, output: Any) -> None:
        recorder.suppress_depth -= 1
        if recorder.suppress_depth == 0:
            recorder.vector(_MODULE_ROLES[type(module).__name__], output.numel())

    for module in model.modules():
        if type(module).__name__ in _MODULE_ROLES:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
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

    config = transformers.AutoConfig.for_model(**spec.config)
    config._attn_implementation = "eager"  # SDPA would fuse both attention BMMs into one op
    cls_name = spec.hf_class(workload.head)
    cls = getattr(transformers, cls_name)
    with torch.device("meta"):
        model = cls(config) if cls_name not in ("BertModel", "RobertaModel", "ViTModel") else cls(
            config, add_pooling_layer=workload.head == "pooler")
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
        recorder = _Recorder()
        with _module_level_ops(model, recorder), recorder:
            model(**inputs)
    return Trace(spec.name, tuple(recorder.ops), workload.as_dict())
