"""Fusion: element-wise SFU work folded into the softmax/norm/activation pass next to it.

An SFU step of a fusible kind (conversions, bias, scaling, adds) that sits directly before or after an
anchor step on a tensor of the same element count, with only such steps in between, costs no SFU time
of its own: the anchor's pass applies it on the fly (e.g. dequantize -> scale -> softmax -> quantize).
Its data still moves: what it reads from or writes to DRAM is counted (residency decides that).
"""

from __future__ import annotations

from simulator.engine.lowering import Step

FUSION_ANCHORS = ("softmax", "layernorm", "groupnorm", "gelu", "relu", "tanh")
FUSIBLE = ("quantize", "dequantize", "bias", "mul", "add")


def fuse(steps: tuple[Step, ...]) -> dict[int, str]:
    """Step index -> name of the anchor step whose pass does its work."""
    fused: dict[int, str] = {}

    def fusible(index: int, elements: int) -> bool:
        step = steps[index]
        return (step.unit == "sfu" and step.op.role in FUSIBLE and step.op.elements == elements
                and index not in fused)

    for index, step in enumerate(steps):
        if step.unit != "sfu" or step.op.role not in FUSION_ANCHORS:
            continue
        for direction in (-1, 1):
            other = index + direction
            while 0 <= other < len(steps) and fusible(other, step.op.elements):
                fused[other] = step.op.name
                other += direction
    return fused
