"""The paged KV cache's block arithmetic and the schedulers' preemption, on their own."""

from __future__ import annotations

from collections import deque

import pytest

from simulator.serving.kv_cache import PagedKVCache
from simulator.serving.requests import Request
from simulator.serving.schedulers import Active, Queue, chunked_plan, continuous_plan, static_plan
from workloads.errors import InputError


def test_blocks_round_up_and_a_window_caps_them() -> None:
    cache = PagedKVCache(10, 16)
    assert [cache.blocks_for(t) for t in (0, 1, 16, 17, 32, 33)] == [0, 1, 1, 2, 2, 3]
    windowed = PagedKVCache(10, 16, window=20)  # keeps 19 tokens: 2 blocks at most
    assert [windowed.blocks_for(t) for t in (16, 17, 19, 200)] == [1, 2, 2, 2]


def test_grow_release_and_peak() -> None:
    cache = PagedKVCache(5, 4)
    cache.grow(1, 9)  # 3 blocks
    assert (cache.used, cache.free, cache.peak) == (3, 2, 3)
    assert cache.can_grow(1, 20) and not cache.can_grow(1, 21) and not cache.can_grow(2, 9)
    cache.grow(1, 12)  # still 3
    cache.grow(2, 8)  # 2 more
    assert (cache.used, cache.free, cache.peak) == (5, 0, 5)
    with pytest.raises(AssertionError):
        cache.grow(2, 9)
    cache.release(1)
    assert (cache.used, cache.peak, cache.held) == (2, 5, {2: 2})
    cache.release(7)  # holds nothing: nothing changes
    assert cache.used == 2


@pytest.mark.parametrize("capacity, block", [(0, 16), (4, 0)])
def test_refused(capacity: int, block: int) -> None:
    with pytest.raises(InputError):
        PagedKVCache(capacity, block)


def queue_of(cache: PagedKVCache, *prompts: tuple[int, int]) -> Queue:
    return Queue(deque(Active(Request(i, 0.0, p, o), p) for i, (p, o) in enumerate(prompts)), [], cache)


def test_continuous_admits_within_the_token_budget_then_decodes() -> None:
    queue = queue_of(PagedKVCache(100, 4), (10, 3), (10, 3), (30, 3))
    plan = continuous_plan(queue, 8, 25)
    assert [(a.request.request_id, new) for a, new in plan] == [(0, 10), (1, 10)]
    for active, new in plan:
        active.computed += new
    assert [(a.request.request_id, new) for a, new in continuous_plan(queue, 8, 25)] == [(2, 30)]  # alone
    queue.running[-1].computed = 30
    assert [(a.request.request_id, new) for a, new in continuous_plan(queue, 8, 25)] == [(0, 1), (1, 1), (2, 1)]


def test_a_full_cache_preempts_the_latest_admitted() -> None:
    queue = queue_of(PagedKVCache(6, 4), (8, 9), (8, 9), (7, 2))  # 2 + 2 + 2 blocks
    plan = continuous_plan(queue, 8, 100)
    assert len(plan) == 3 and queue.kv.free == 0
    for active, new in plan:
        active.computed += new
        active.generated = 1
    decodes = continuous_plan(queue, 8, 100)  # the first two need a third block: request 2 goes
    assert [(a.request.request_id, new) for a, new in decodes] == [(0, 1), (1, 1)]
    preempted = queue.waiting[0]
    assert (preempted.request.request_id, preempted.preemptions, preempted.target, preempted.computed) == (2, 1, 8, 0)
    assert queue.kv.used == 6


def test_chunked_fills_its_budget_after_the_decodes() -> None:
    queue = queue_of(PagedKVCache(100, 4), (10, 3), (50, 3))
    plan = chunked_plan(queue, 8, 16)
    assert [(a.request.request_id, new) for a, new in plan] == [(0, 10), (1, 6)]
    for active, new in plan:
        active.computed += new
    plan = chunked_plan(queue, 8, 16)
    assert [(a.request.request_id, new) for a, new in plan] == [(0, 1), (1, 15)]


def test_static_reserves_whole_generations_and_waits_for_the_batch() -> None:
    queue = queue_of(PagedKVCache(6, 4), (8, 5), (8, 5), (1, 1))  # 12 tokens: 3 blocks each
    plan = static_plan(queue, 4, 100)
    assert [a.request.request_id for a, _ in plan] == [0, 1] and queue.kv.used == 6
    assert [(a.request.request_id, new) for a, new in static_plan(queue, 4, 100)] == [(0, 1), (1, 1)]
