"""One-token kinds (decode steps) costed from spans of cache lengths: every length equals the whole model's
direct pass, bit for bit, across span ends, halvings and fusion changes; a span prepares a few probes for
many lengths."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cli_helpers import TESTS
from conftest import preset_with

from simulator.engine import Simulator
from simulator.serving import decode_span
from simulator.serving.iteration import IterationCoster
from simulator.serving.parts import kind_peaks, kind_steps
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_run_config
from workloads.mixed import MixedBatch, Sequence
from workloads.models import load_model

MODEL = str(TESTS / "configs" / "llama-serve-6.json")  # 512 positions


def coster(config: str, hardware: str) -> IterationCoster:
    chip = (preset_with("tpu_v5e_like", memory={"ifmap_buffer_bytes": 262144}) if hardware == "small"
            else load_hardware(hardware))
    return IterationCoster(load_model(MODEL), Simulator(chip, load_run_config(f"configs/{config}.yaml")))


def counted_prepares(costs: IterationCoster, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    prepare = costs.sim.prepare

    def counting(trace):  # type: ignore[no-untyped-def]
        calls.append(1)
        return prepare(trace)

    monkeypatch.setattr(costs.sim, "prepare", counting)
    return calls


@pytest.mark.parametrize("config, hardware", [("int8", "tpu_v5e_like"), ("w8a8", "tpu_v5e_like"),
                                              ("w4a16_g128_kv4", "rapid_like_4core"), ("native", "small")])
def test_every_length_of_a_span_equals_the_direct_pass(config: str, hardware: str) -> None:
    """Lone decode steps (one and three sequences: generate's step) and decode steps among other kinds, at
    every cache length from 1 to the model's last: each iteration equals its direct pass. W8A8's per-token
    scales grow with the cache; the small buffer spills the longer caches' scores."""
    costs = coster(config, hardware)
    for length in range(1, 511, 8):
        for batch in (MixedBatch((Sequence(1, length, True),)), MixedBatch((Sequence(1, length, True),) * 3),
                      MixedBatch((Sequence(1, length, True), Sequence(1, 511 - length, True), Sequence(7, 20, False)))):
            assert costs.cost(batch) == costs.direct(batch), (length, batch.key)


def test_a_span_prepares_a_few_probes_for_many_lengths(monkeypatch: pytest.MonkeyPatch) -> None:
    costs = coster("int8", "tpu_v5e_like")
    costs.cost(MixedBatch((Sequence(1, 99, True),)))  # probed: its parts (the token part and this length's kind)
    prepares = counted_prepares(costs, monkeypatch)
    for length in range(100, 300):
        costs.cost(MixedBatch((Sequence(1, length, True),)))
    assert costs.counts["summed"] == 200
    assert len(prepares) == 3  # the span's start, the length after it and its end: it covers every length
    (spans,) = costs.spans.values()
    assert [(span.low, span.high) for span in spans] == [(100, 100 + decode_span.SPAN_TOKENS)]


def test_a_length_where_fusion_could_change_is_left_to_its_own_span() -> None:
    costs = coster("int8", "tpu_v5e_like")
    for length in (98, 99):  # the first is probed, the second opens a span
        costs.cost(MixedBatch((Sequence(1, length, True),)))
    (spans,) = costs.spans.values()
    span = replace(spans[0], skipped=frozenset({99, 120}))
    assert span.covers(99) and not span.covers(120) and span.covers(121) and not span.covers(98)
    assert not span.covers(span.high + 1) and span.covers(span.high)
    costs.spans[next(iter(costs.spans))] = [span]
    batch = MixedBatch((Sequence(1, 120, True),))
    assert costs.cost(batch) == costs.direct(batch)
    assert [(s.low, 120 in s.skipped) for s in costs.spans[next(iter(costs.spans))]] == [(99, True), (120, False)]


def test_a_span_whose_ends_differ_is_halved(monkeypatch: pytest.MonkeyPatch) -> None:
    """open_span halves a span until its ends grow alike; none when no span of three lengths does."""
    costs = coster("int8", "tpu_v5e_like")
    prepared = {length: costs.sim.prepare(costs.spec.attention_trace(MixedBatch((Sequence(1, length, True),))))
                for length in (10, 11, 12, 13, 14, 15, 18, 26, 42)}
    asked: list[int] = []

    def attention(length: int):  # type: ignore[no-untyped-def]
        asked.append(length)
        return prepared[length] if length not in (42, 26) else prepared[10]  # 26 and 42 lower as at 10

    span = decode_span.open_span(attention, 0, 10, 42, costs.sim, costs._times)
    assert span is not None and (span.low, span.high) == (10, 18) and asked == [10, 42, 11, 26, 11, 18, 11]
    assert all(type(length) is int for length in asked)
    assert decode_span.open_span(prepared.get, 0, 10, 13, costs.sim, costs._times) is not None  # four lengths
    assert decode_span.open_span(prepared.get, 0, 10, 12, costs.sim, costs._times) is None  # three: probed alone
    end = prepared[18]
    name = next(iter(end.placement.footprint_bytes))
    homes = {**end.placement.home, name: "dram"}
    spilled = {**prepared, 18: replace(end, placement=replace(end.placement, home=homes))}
    assert spilled[18].spilled
    span = decode_span.open_span(spilled.get, 0, 10, 18, costs.sim, costs._times)
    assert span is not None and (span.low, span.high) == (10, 14)  # an end that spills is halved away


def test_a_lengths_bound_on_live_bytes_is_its_own_at_the_start_else_the_larger_ends() -> None:
    costs = coster("int8", "tpu_v5e_like")
    prepared = {length: costs.sim.prepare(costs.spec.attention_trace(MixedBatch((Sequence(1, length, True),))))
                for length in (100, 101, 300)}
    end = prepared[300]  # its kind's first tensor given a larger share (a decode's shares do not grow here)
    steps = kind_steps(end)[0]
    name = next(name for name, (first, _) in end.placement.lifetimes.items() if first in steps)
    shares = {**end.placement.footprint_bytes, name: end.placement.footprint_bytes[name] + 1000}
    prepared[300] = replace(end, placement=replace(end.placement, footprint_bytes=shares))
    span = decode_span.open_span(prepared.get, 0, 100, 300, costs.sim, costs._times)
    assert span is not None
    peaks = [kind_peaks(prepared[length])[0] for length in (100, 300)]
    assert peaks[0] < peaks[1]
    assert span.part(100, costs.sim).peak == peaks[0]
    assert span.part(101, costs.sim).peak == span.part(300, costs.sim).peak == peaks[1]
