"""How a decode step's sizes grow with the KV cache (pure).

Between two cache lengths where a pass lowers to the same steps with the same placement, every size of
a step (its op's batch, m, k, n and elements; each tensor's elements, appended entries, pruned row
length and scale groups) is affine in the cache length. Generation costs the steps whose sizes grow at each length and
the others once.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

from simulator.engine import Prepared
from simulator.engine.steps import Step, evolve_step
from workloads.ops import Tensor, evolve

FUSION_REACH = 8  # steps on either side of a growing step whose equal sizes could join it in one fused pass


@dataclass(frozen=True)
class TensorSizes:
    elements: int
    appended: int
    nm_row: int
    scale_group: int  # a per-token scale's elements grow with the row it scales (a probability row)
    coarse_scale_group: int


@dataclass(frozen=True)
class StepSizes:
    """Every size of a step that can grow with the cache (or, as a slope, its growth per cache token)."""

    batch: int
    m: int
    k: int
    n: int
    elements: int
    tensors: tuple[TensorSizes, ...]  # the step's reads, then its writes

    @classmethod
    def of(cls, step: Step, tensors: dict[str, Tensor]) -> StepSizes:
        op = step.op
        return cls(op.batch, op.m, op.k, op.n, op.elements,
                   tuple(TensorSizes(tensors[name].elements, tensors[name].appended, tensors[name].nm_row,
                                     tensors[name].scale_group, tensors[name].coarse_scale_group)
                         for name in (*step.reads, *step.writes)))

    def _flat(self) -> tuple[int, ...]:
        return (self.batch, self.m, self.k, self.n, self.elements,
                *(value for t in self.tensors for value in astuple(t)))

    def _rebuilt(self, flat: list[int]) -> StepSizes:
        per_tensor = len(fields(TensorSizes))
        rest = flat[5:]
        batch, m, k, n, elements = flat[:5]
        return StepSizes(batch, m, k, n, elements, tuple(TensorSizes(*rest[i:i + per_tensor])
                                                         for i in range(0, len(rest), per_tensor)))

    def minus(self, other: StepSizes) -> StepSizes:
        return self._rebuilt([a - b for a, b in zip(self._flat(), other._flat(), strict=True)])

    def plus(self, slope: StepSizes, times: int) -> StepSizes:
        return self._rebuilt([a + d * times for a, d in zip(self._flat(), slope._flat(), strict=True)])


def growth(a: Prepared, a_next: Prepared, b: Prepared, span: int) -> dict[int, StepSizes] | None:
    """Step index -> growth of its sizes per cache token, for the steps whose sizes change with the cache
    between ``a`` and ``b`` (``span`` tokens apart; ``a_next`` one token after ``a``); None when the sizes
    are not affine in the cache length over the span (or the steps differ)."""
    if len(a_next.lowered.steps) != len(a.lowered.steps):
        return None
    grows = {}
    for index, (first, second, end) in enumerate(zip(a.lowered.steps, a_next.lowered.steps, b.lowered.steps,
                                                     strict=True)):
        start, after, final = (StepSizes.of(s, p.lowered.tensors) for s, p in ((first, a), (second, a_next), (end, b)))
        if start == final:
            if after != start:
                return None
            continue
        slope = after.minus(start)
        if start.plus(slope, span) != final:
            return None
        grows[index] = slope
    return grows


def span_growth(a: Prepared, a_next: Prepared, b: Prepared, span: int) -> dict[int, StepSizes] | None:
    """:func:`growth` over a span whose ends lower to the same steps, fused and placed alike (the lengths
    between are then costed with ``a``'s placement and grown sizes); None when they do not."""
    same = (a.placement.home == b.placement.home and a.fused == b.fused
            and [(s.op.name, s.unit) for s in a.lowered.steps] == [(s.op.name, s.unit) for s in b.lowered.steps])
    return growth(a, a_next, b, span) if same else None


def grown_step(step: Step, slope: StepSizes, offset: int, start: dict[str, Tensor], tensors: dict[str, Tensor],
               ) -> Step:
    """``step`` grown by ``offset`` cache tokens from its sizes at the start of the span (``start``); its
    grown tensors are written to ``tensors``. (Copied unchecked: this runs once per step and length.)"""
    op = step.op
    for name, grows in zip((*step.reads, *step.writes), slope.tensors, strict=True):
        if grows.elements or grows.appended or grows.nm_row or grows.scale_group or grows.coarse_scale_group:
            t = start[name]
            tensors[name] = evolve(t, elements=t.elements + grows.elements * offset,
                                   appended=t.appended + grows.appended * offset,
                                   scale_group=t.scale_group + grows.scale_group * offset,
                                   nm_row=t.nm_row + grows.nm_row * offset,
                                   coarse_scale_group=t.coarse_scale_group + grows.coarse_scale_group * offset)
    grown = evolve(op, batch=op.batch + slope.batch * offset, m=op.m + slope.m * offset, k=op.k + slope.k * offset,
                   n=op.n + slope.n * offset, elements=op.elements + slope.elements * offset)
    return evolve_step(step, op=grown)


def fusion_changes(a: Prepared, grows: dict[int, StepSizes], low: int, high: int) -> set[int]:
    """Cache lengths in low..high at which a growing SFU step's element count meets that of an SFU step
    near it (fusion could join or part them there): those lengths are simulated whole."""
    steps = a.lowered.steps
    special: set[int] = set()
    for index in grows:
        if steps[index].unit != "sfu":
            continue
        here, slope_here = steps[index].op.elements, grows[index].elements
        for other in range(max(0, index - FUSION_REACH), min(len(steps), index + FUSION_REACH + 1)):
            if other == index or steps[other].unit != "sfu":
                continue
            there, slope_there = steps[other].op.elements, grows[other].elements if other in grows else 0
            if slope_here == slope_there:
                continue  # equal everywhere or nowhere: the same as at ``low``
            meet = (there - here) / (slope_here - slope_there)
            if meet == int(meet) and 0 < meet <= high - low:
                special.add(low + int(meet))
    return special
