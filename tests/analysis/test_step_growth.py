"""How a decode step's sizes grow with the cache, against closed forms: sizes plus a slope times an offset,
the span check refusing ends that are placed, fused or lowered differently, and the lengths where a
growing vector step's size meets a neighbour's (fusion could change there)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simulator.analysis.step_growth import StepSizes, TensorSizes, fusion_changes, grown_step, growth, span_growth
from simulator.engine import Simulator
from simulator.engine.steps import Step
from simulator.formats.precision import parse_precision
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_run_config
from workloads.mixed import MixedBatch, Sequence
from workloads.models import load_model
from workloads.ops import Op, Tensor

BF16 = parse_precision("bf16")
SIM = Simulator(load_hardware("tpu_v5e_like"), load_run_config("configs/int8.yaml"))
SPEC = load_model("llama-2-7b")


def attention(length: int):  # type: ignore[no-untyped-def]
    return SIM.prepare(SPEC.attention_trace(MixedBatch((Sequence(1, length, True),))))


def product() -> tuple[Step, dict[str, Tensor]]:
    op = Op("p", 3, "bmm_qk", "attention", "bmm", batch=2, m=1, k=64, n=100, elements=7, reads=("a", "b"),
            writes=("c",))
    tensors = {"a": Tensor("a", "activation", 128, 16, 0, "", 64, 16, 2, 4, 10, 5, 8, 3),
               "b": Tensor("b", "state", 12800, 8, 128, "src", 0, 0, 0, 0, 0, 0, 0, 2),
               "c": Tensor("c", "activation", 200, 32)}
    return Step(op, "array", False, BF16, ("a", "b"), ("c",)), tensors


def test_sizes_add_and_subtract_field_by_field() -> None:
    a = StepSizes(1, 2, 3, 4, 5, (TensorSizes(6, 7, 8, 9, 10), TensorSizes(11, 12, 13, 14, 15)))
    b = StepSizes(10, 30, 50, 70, 90, (TensorSizes(2, 4, 6, 8, 10), TensorSizes(1, 3, 5, 7, 9)))
    assert b.minus(a) == StepSizes(9, 28, 47, 66, 85, (TensorSizes(-4, -3, -2, -1, 0),
                                                       TensorSizes(-10, -9, -8, -7, -6)))
    assert a.plus(b, 3) == StepSizes(31, 92, 153, 214, 275, (TensorSizes(12, 19, 26, 33, 40),
                                                             TensorSizes(14, 21, 28, 35, 42)))
    step, tensors = product()
    assert StepSizes.of(step, tensors) == StepSizes(2, 1, 64, 100, 7, (
        TensorSizes(128, 0, 10, 64, 5), TensorSizes(12800, 128, 0, 0, 0), TensorSizes(200, 0, 0, 0, 0)))


def test_a_grown_step_is_its_start_plus_the_slope_times_the_offset() -> None:
    step, start = product()
    slope = StepSizes(1, 2, 3, 4, 5, (TensorSizes(6, 0, 8, 9, 10), TensorSizes(0, 7, 0, 0, 0),
                                      TensorSizes(11, 0, 0, 0, 0)))
    tensors = dict(start)
    grown = grown_step(step, slope, 4, start, tensors)
    assert grown.op == replace(step.op, batch=6, m=9, k=76, n=116, elements=27)
    assert replace(grown, op=step.op) == step  # nothing else of the step changes
    assert tensors["a"] == replace(start["a"], elements=152, nm_row=42, scale_group=100, coarse_scale_group=45)
    assert tensors["b"] == replace(start["b"], appended=156)  # a cache appending more entries
    assert tensors["c"] == replace(start["c"], elements=244)
    unchanged = dict(start)
    grown_step(step, replace(slope, tensors=(slope.tensors[0], TensorSizes(0, 0, 0, 0, 0), slope.tensors[2])), 4,
               start, unchanged)
    assert unchanged["b"] is start["b"]  # not grown: not rebuilt
    for only in (TensorSizes(0, 0, 0, 9, 0), TensorSizes(0, 0, 0, 0, 10)):  # a scale group alone grows it
        alone = dict(start)
        grown_step(step, replace(slope, tensors=(only, *slope.tensors[1:])), 4, start, alone)
        assert (alone["a"].scale_group, alone["a"].coarse_scale_group) == (64 + 4 * only.scale_group,
                                                                           5 + 4 * only.coarse_scale_group)
    assert grown_step(step, slope, 0, start, dict(start)) == step
    with pytest.raises(ValueError):  # a slope of other tensors
        grown_step(step, replace(slope, tensors=slope.tensors[:2]), 1, start, dict(start))


def test_growth_over_a_span_is_affine_or_none() -> None:
    a, a_next, b = attention(100), attention(101), attention(132)
    grows = growth(a, a_next, b, 32)
    assert grows is not None and grows == span_growth(a, a_next, b, 32)
    qk = next(index for index, step in enumerate(a.lowered.steps) if step.op.name.endswith("self_attn.qk"))
    assert grows[qk].n == 1 and grows[qk].k == 0  # one more key per cache token
    assert all(step.op == b.lowered.steps[index].op for index, step in enumerate(a.lowered.steps) if index not in grows)
    assert growth(a, a_next, b, 31) is None  # not where the slope says
    assert growth(a, a, b, 32) is None  # a step that grows by the end but not by the next length
    assert growth(a, replace(a_next, lowered=replace(a_next.lowered, steps=a_next.lowered.steps[:-1])), b,
                  32) is None  # other steps


def test_a_span_whose_ends_are_placed_fused_or_lowered_differently_has_no_growth() -> None:
    a, a_next, b = attention(100), attention(101), attention(132)
    name = next(iter(b.placement.home))
    other = {"dram" if home != "dram" else "chip" for home in [b.placement.home[name]]}.pop()
    assert span_growth(a, a_next, replace(b, placement=replace(b.placement, home={**b.placement.home, name: other})),
                       32) is None
    assert span_growth(a, a_next, replace(b, fused={**b.fused, 0: "x"}), 32) is None
    renamed = tuple(replace(step, op=replace(step.op, name=step.op.name + "'")) if index == 3 else step
                    for index, step in enumerate(b.lowered.steps))
    assert span_growth(a, a_next, replace(b, lowered=replace(b.lowered, steps=renamed)), 32) is None
    moved = tuple(replace(step, unit="link") if index == 3 else step for index, step in enumerate(b.lowered.steps))
    assert span_growth(a, a_next, replace(b, lowered=replace(b.lowered, steps=moved)), 32) is None


def vector(name: str, elements: int) -> Step:
    return Step(Op(name, 0, "mul", "attention", "vector", elements=elements), "sfu", True, BF16, (), ())


def test_fusion_could_change_where_a_growing_vector_steps_size_meets_a_neighbours() -> None:
    """A vector step of 10 + 3 x offset elements meets a fixed one of 40 at offset 10, one of 13 at offset 1,
    one growing by 1 from 20 at offset 5 (which meets the fixed one at offset 20 and the one of 100 at 80)
    and the last vector step within 8 steps of it (100) at offset 30; one of 10 (equal at the start), one
    growing alike, an array step and one 9 steps away are no meeting; nor a meeting at a fraction or past
    the span."""
    steps = [vector("grows", 10), vector("alike", 99), vector("fixed", 40), vector("slower", 20),
             Step(Op("array", 0, "bmm_qk", "attention", "bmm", batch=1, m=1, k=1, n=70, elements=22), "array", False,
                  BF16, (), ()),
             vector("thirteen", 13), vector("ten", 10), vector("pad", 1000), vector("reach", 100), vector("far", 130)]
    prepared = replace(attention(100), lowered=replace(attention(100).lowered, steps=tuple(steps)))
    sizes = StepSizes(0, 0, 0, 0, 3, ())
    grows = {4: sizes, 0: sizes, 3: replace(sizes, elements=1), 1: sizes}  # the array step first
    assert fusion_changes(prepared, grows, 100, 200) == {101, 105, 110, 120, 130, 180}
    assert fusion_changes(prepared, grows, 100, 110) == {101, 105, 110}  # past the span
    assert fusion_changes(prepared, {0: replace(sizes, elements=4)}, 100, 200) == set()  # no whole offset
    late = [vector("fixed", 40), vector("grows", 10)]  # the neighbour before it: index 0
    prepared = replace(prepared, lowered=replace(prepared.lowered, steps=tuple(late)))
    assert fusion_changes(prepared, {1: sizes}, 100, 200) == {110}
    far = [vector("fixed", 40), *[vector(f"pad{i}", 1000) for i in range(8)], vector("grows", 10)]
    prepared = replace(prepared, lowered=replace(prepared.lowered, steps=tuple(far)))
    assert fusion_changes(prepared, {9: sizes}, 100, 200) == set()  # 9 steps before it
