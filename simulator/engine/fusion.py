"""Fusion: element-wise SFU work folded into the softmax/norm/activation pass next to it.

An SFU step of a fusible kind (conversions, bias, scaling, adds) that sits directly before or after an
anchor step on a tensor of the same element count, with only such steps in between, and that feeds the
chain or is fed by it (it writes what the next step toward the anchor reads, or reads what the previous
one wrote), costs no SFU time of its own: the anchor's pass applies it on the fly (e.g. dequantize ->
scale -> softmax -> quantize). A neighbour that merely has as many elements is not part of the chain.
Its data still moves: what it reads from or writes to DRAM is counted (residency decides that).
"""

from __future__ import annotations

from simulator.engine.steps import Step
from workloads.vocabulary import FUSIBLE, FUSION_ANCHORS


def fuse(steps: tuple[Step, ...]) -> dict[int, str]:
    """Step index -> name of the anchor step whose pass does its work."""
    fused: dict[int, str] = {}

    def joins(index: int, neighbour: int, elements: int, direction: int) -> bool:
        """Whether step ``index`` extends the chain whose end toward it is step ``neighbour``."""
        step = steps[index]
        if step.unit != "sfu" or step.op.role not in FUSIBLE or step.op.elements != elements or index in fused:
            return False
        feeds = steps[neighbour].reads if direction < 0 else step.reads
        fed = step.writes if direction < 0 else steps[neighbour].writes
        return any(name in feeds for name in fed)

    for index, step in enumerate(steps):
        if step.unit != "sfu" or step.op.role not in FUSION_ANCHORS:
            continue
        for direction in (-1, 1):
            chain_end, other = index, index + direction
            while 0 <= other < len(steps) and joins(other, chain_end, step.op.elements, direction):
                fused[other] = step.op.name
                chain_end, other = other, other + direction
    return fused
