"""The schedulers' invariants on random streams and settings: every request served once or rejected, every
token out, the cache and the limits kept, nothing recomputed under swap preemption."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st
from test_serving import MODEL, small_dram

from simulator.engine import Simulator
from simulator.serving.kv_cache import PagedKVCache
from simulator.serving.requests import Lengths, Request, generate_requests, sampled
from simulator.serving.server import ServeSettings
from simulator.serving.session import run_serving
from simulator.spec.hardware import Hardware
from simulator.spec.run_config import load_run_config
from workloads.errors import InputError
from workloads.models import load_model

GIB = 2**30


@functools.cache
def chip(blocks: int) -> Hardware:
    return small_dram(blocks, 128)


@st.composite
def runs(draw: st.DrawFn) -> tuple[ServeSettings, int, list[Request]]:
    scheduler = draw(st.sampled_from(["static", "continuous", "chunked"]))
    preemption = "recompute" if scheduler == "static" else draw(st.sampled_from(["recompute", "swap"]))
    max_tokens = draw(st.sampled_from([16, 32, 128]))
    max_batch = draw(st.sampled_from([1, 3, 64]))
    if scheduler == "chunked":
        max_batch = min(max_batch, max_tokens)
    samples, beams = draw(st.sampled_from([(1, 1), (1, 1), (2, 1), (1, 3)]))
    requests = generate_requests(draw(st.integers(1, 24)), draw(st.sampled_from([None, 20.0, 400.0])),
                                 Lengths("uniform", (1, draw(st.sampled_from([20, 120])))),
                                 Lengths("uniform", (1, draw(st.sampled_from([5, 60, 200])))), draw(st.integers(0, 99)))
    space = GIB if preemption == "swap" else 0
    blocks = draw(st.sampled_from([4, 12, 24, 64]))
    return ServeSettings(scheduler, max_batch, max_tokens, None, preemption, space), blocks, \
        sampled(requests, samples, beams)


@settings(max_examples=30, deadline=None)
@given(run=runs())
def test_scheduler_invariants(run: tuple[ServeSettings, int, list[Request]]) -> None:
    setting, blocks, requests = run
    simulator = Simulator(chip(blocks), load_run_config("configs/int8.yaml"))
    try:
        served = run_serving(load_model(MODEL), simulator, requests, setting, 16).served
    except InputError as error:  # refused up front, not midway
        assert "never run within --max-batch" in str(error)
        assert any(r.samples > setting.max_batch for r in requests)
        return
    iterations = served.iterations
    fits = PagedKVCache(served.kv_capacity, 16)
    never_fit = {r.request_id for r in requests
                 if fits.blocks_for(r.final_tokens, r.samples, r.prompt_tokens) > served.kv_capacity}
    assert {r.request_id for r in served.rejected} == never_fit
    assert sorted([a.request.request_id for a in served.requests] + [r.request_id for r in served.rejected]) == \
        [r.request_id for r in requests]
    for active in served.requests:
        assert active.generated == active.request.output_tokens and active.finish is not None
        assert active.first_token is not None and active.first_scheduled is not None
        assert active.first_scheduled <= active.first_token <= active.finish
    assert sum(row.emitted for row in iterations) == sum(a.request.output_tokens * a.request.returned
                                                        for a in served.requests)
    assert all(row.kv_blocks <= served.kv_capacity for row in iterations)
    assert all(row.decode_sequences <= setting.max_batch for row in iterations)
    if setting.scheduler == "chunked":
        assert all(row.prefill_tokens + row.decode_sequences <= setting.max_tokens for row in iterations)
    for before, after in zip(iterations, iterations[1:], strict=False):
        assert after.start >= before.start + before.cycles
    prompts = sum(a.request.prompt_tokens for a in served.requests)
    prefilled = sum(row.prefill_tokens for row in iterations)
    assert prefilled == prompts if setting.preemption == "swap" else prefilled >= prompts
