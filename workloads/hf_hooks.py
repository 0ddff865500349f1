"""Hooks that make the tracer record a module or a function as one op instead of its many aten ops.

Norms, activations and rotary tables written as several element-wise aten ops count as one vector op
each (``module_hooks``); ``apply_rotary_pos_emb``, a function rather than a module, counts as one
``rope`` op for the queries and one for the keys (``rotary_hook``). The recorder is
:class:`workloads.hf_trace._Recorder`: these hooks keep its module stack and call its ``vector`` and
``alias``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

# Module classes recorded as one vector op (their inner element-wise ops are not recorded).
MODULE_ROLES = {
    "LayerNorm": "layernorm",
    "T5LayerNorm": "layernorm",
    "LlamaRMSNorm": "rmsnorm",
    "Qwen2RMSNorm": "rmsnorm",
    "MistralRMSNorm": "rmsnorm",
    "MixtralRMSNorm": "rmsnorm",
    "LlamaRotaryEmbedding": "rope_table",
    "Qwen2RotaryEmbedding": "rope_table",
    "MistralRotaryEmbedding": "rope_table",
    "MixtralRotaryEmbedding": "rope_table",
    "SiLUActivation": "silu",
    "SiLU": "silu",
    "GELUActivation": "gelu",
    "NewGELUActivation": "gelu",
    "GELU": "gelu",
    "ReLU": "relu",
    "Tanh": "tanh",
}


@contextlib.contextmanager
def module_hooks(model: Any, recorder: Any) -> Iterator[None]:
    """Keep the recorder's module stack, reset each attention call's BMM count, and record norms and
    activations at module level (one op, whatever element-wise ops they are written with)."""
    handles = []

    def pre_hook(path: str, module: Any) -> None:
        recorder.stack.append((path, module))
        recorder.bmms.pop(path, None)
        if type(module).__name__ in MODULE_ROLES:
            recorder.suppress_depth += 1

    def post_hook(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        if type(module).__name__ in MODULE_ROLES:
            recorder.suppress_depth -= 1
            if recorder.suppress_depth == 0:
                parts = list(output) if isinstance(output, tuple) else [output]
                recorder.vector(MODULE_ROLES[type(module).__name__], sum(part.numel() for part in parts),
                                tuple(inputs), parts[0], module_level=True)
                for part in parts[1:]:  # (cos, sin): one table tensor
                    recorder.alias(part, parts[0])
        recorder.stack.pop()

    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda mod, inputs, path=path: pre_hook(path, mod)))
        handles.append(module.register_forward_hook(lambda mod, inputs, output: post_hook(mod, inputs, output)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def rotary_hook(model: Any, recorder: Any) -> Iterator[None]:
    """Record each ``apply_rotary_pos_emb`` call of the model's modeling module (a function, not a module)
    as one ``rope`` op for the queries and one for the keys, whatever element-wise ops it is written with."""
    modeling = sys.modules[type(model).__module__]
    original = getattr(modeling, "apply_rotary_pos_emb", None)
    if original is None:
        yield
        return

    def rotate(q: Any, k: Any, cos: Any, sin: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        recorder.suppress_depth += 1
        try:
            q_out, k_out = original(q, k, cos, sin, *args, **kwargs)
        finally:
            recorder.suppress_depth -= 1
        recorder.vector("rope", q_out.numel(), (q, cos), q_out)
        recorder.vector("rope", k_out.numel(), (k, cos), k_out)
        return q_out, k_out

    setattr(modeling, "apply_rotary_pos_emb", rotate)  # noqa: B010 - a module attribute mypy cannot see
    try:
        yield
    finally:
        setattr(modeling, "apply_rotary_pos_emb", original)  # noqa: B010
