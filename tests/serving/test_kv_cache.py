"""The paged KV cache's block arithmetic and the schedulers' preemption, on their own."""

from __future__ import annotations

from collections import deque

import pytest

from simulator.serving.kv_cache import PagedKVCache
from simulator.serving.requests import Request
from simulator.serving.schedulers import Active, Queue, chunked_plan, continuous_plan, static_plan
from simulator.serving.swap import HostSpace
from workloads.errors import InputError


def test_blocks_round_up_and_a_window_caps_them() -> None:
    cache = PagedKVCache(10, 16)
    assert [cache.blocks_for(t) for t in (0, 1, 16, 17, 32, 33)] == [0, 1, 1, 2, 2, 3]
    windowed = PagedKVCache(10, 16, window=20)  # keeps 19 tokens: 2 blocks at most
    assert [windowed.blocks_for(t) for t in (16, 17, 19, 200)] == [1, 2, 2, 2]
    assert PagedKVCache(10, 1, window=20).blocks_for(200) == 19


def test_grow_release_and_peak() -> None:
    cache = PagedKVCache(5, 4)
    cache.grow(1, 9)  # 3 blocks
    assert (cache.used, cache.free, cache.peak) == (3, 2, 3)
    assert cache.can_grow(1, 20) and not cache.can_grow(1, 21) and not cache.can_grow(2, 9)
    cache.grow(1, 12)  # still 3
    cache.grow(3, 0)  # nothing held
    assert 3 not in cache.held and cache.used == 3
    cache.grow(2, 8)  # 2 more
    assert (cache.used, cache.free, cache.peak) == (5, 0, 5)
    with pytest.raises(AssertionError):
        cache.grow(2, 9)
    cache.release(1)
    assert (cache.used, cache.peak, cache.held) == (2, 5, {2: 2})
    cache.grow(2, 9)
    assert cache.held == {2: 3} and cache.used == 3
    cache.release(7)  # holds nothing: nothing changes
    assert cache.used == 3


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


def test_a_full_cache_preempts_the_latest_arrival() -> None:
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


def test_a_decode_needs_a_free_block_even_with_room_in_its_own() -> None:
    """vLLM's rule: request 0's step fills its second block's sixth entry, yet with no block free the latest
    arrival is preempted before it runs."""
    queue = queue_of(PagedKVCache(4, 4), (5, 9), (5, 9))  # 2 + 2 blocks
    for active, new in continuous_plan(queue, 8, 100):
        active.computed += new
        active.generated = 1
    assert queue.kv.free == 0
    assert admitted(continuous_plan(queue, 8, 100)) == [(0, 1)]
    assert [(a.request.request_id, a.preemptions) for a in queue.waiting] == [(1, 1)]
    assert queue.kv.used == 2


def test_arrival_not_admission_ranks_the_running() -> None:
    """Request 0 was readmitted after request 1 (as after a preemption): it still decodes first, and request 1,
    the later arrival, is the one preempted."""
    cache = PagedKVCache(4, 4)
    late, early = (Active(Request(i, float(i), 8, 9), 8, computed=8, generated=1) for i in (1, 0))
    queue = Queue(deque(), [], cache)
    for active in (late, early):
        queue.running.append(active)
        queue.hold(active, 8)
    assert admitted(continuous_plan(queue, 8, 100)) == [(0, 1)]
    assert list(queue.waiting) == [late] and late.preemptions == 1


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


def admitted(plan: list) -> list[tuple[int, int]]:
    return [(a.request.request_id, new) for a, new in plan]


def test_admission_limits() -> None:
    """The token budget counts every admitted prompt (equal to it still admits); --max-batch caps the
    running sequences."""
    queue = queue_of(PagedKVCache(100, 4), (10, 3), (10, 3), (10, 3))
    assert admitted(continuous_plan(queue, 8, 20)) == [(0, 10), (1, 10)]
    queue = queue_of(PagedKVCache(100, 4), (10, 3), (10, 3), (10, 3))
    assert admitted(continuous_plan(queue, 2, 100)) == [(0, 10), (1, 10)]
    queue = queue_of(PagedKVCache(100, 4), (10, 3), (10, 3), (10, 3))
    assert admitted(static_plan(queue, 2, 100)) == [(0, 10), (1, 10)]
    queue = queue_of(PagedKVCache(100, 4), (10, 3), (10, 3), (30, 3))
    assert admitted(static_plan(queue, 8, 20)) == [(0, 10), (1, 10)]
    queue = queue_of(PagedKVCache(100, 4), (30, 3), (10, 3))
    assert admitted(static_plan(queue, 8, 20)) == [(0, 30)]  # alone
    queue = queue_of(PagedKVCache(100, 4), (7, 3), (5, 3), (10, 3))
    assert admitted(chunked_plan(queue, 2, 13)) == [(0, 7), (1, 5)]  # budget left: 1; the batch is full
    queue = queue_of(PagedKVCache(100, 4), (7, 3), (5, 3))
    assert admitted(chunked_plan(queue, 8, 8)) == [(0, 7), (1, 1)]  # the last token of the budget


def test_a_continued_prompt_takes_what_is_left_of_it() -> None:
    queue = queue_of(PagedKVCache(100, 4), (20, 3))
    assert admitted(chunked_plan(queue, 8, 12)) == [(0, 12)]
    queue.running[0].computed = 12
    assert admitted(chunked_plan(queue, 8, 12)) == [(0, 8)]
    assert queue.kv.used == 5  # 20 tokens held


def test_a_sequence_with_no_one_to_preempt_preempts_itself() -> None:
    """Two decoding sequences, one free block: the older takes it; the younger, with only a planned
    sequence left to preempt, is preempted itself; each preemption is counted and resets its progress."""
    queue = queue_of(PagedKVCache(5, 4), (8, 5), (8, 5))
    for active, new in continuous_plan(queue, 8, 100):
        active.computed += new
        active.generated = 1
    assert admitted(continuous_plan(queue, 8, 100)) == [(0, 1)]
    younger = queue.waiting[0]
    assert (younger.request.request_id, younger.preemptions, younger.target, queue.kv.used) == (1, 1, 9, 3)
    queue.admit(younger)
    younger.generated = 2
    queue.preempt(younger)
    assert (younger.preemptions, younger.target, younger.computed) == (2, 10, 0)


def test_the_smallest_cache_and_the_messages() -> None:
    assert PagedKVCache(1, 1).blocks_for(1) == 1
    with pytest.raises(InputError, match="--kv-block-size must be a positive number of tokens, got 0"):
        PagedKVCache(4, 0)
    with pytest.raises(InputError, match="no room for one block"):
        PagedKVCache(0, 4)


def test_prefilling_prompts_share_the_budget_and_keep_their_chunks() -> None:
    """Two prompts part-way through their prefill: the older takes its chunk first, the younger what is
    left of the budget; a chunk that does not fit the cache preempts the younger, never a planned one."""
    queue = queue_of(PagedKVCache(100, 4), (30, 3), (30, 3))
    assert admitted(chunked_plan(queue, 8, 20)) == [(0, 20)]
    queue.running[0].computed = 20
    assert admitted(chunked_plan(queue, 8, 16)) == [(0, 10), (1, 6)]
    queue.running[0].computed, queue.running[1].computed = 30, 6
    assert admitted(chunked_plan(queue, 8, 16)) == [(0, 1), (1, 15)]
    full = queue_of(PagedKVCache(6, 4), (12, 3), (12, 3))
    assert admitted(chunked_plan(full, 8, 24)) == [(0, 12), (1, 12)]  # 3 + 3 blocks
    for active in full.running:
        active.computed = 12
    full.running[0].target = full.running[1].target = 20  # as after a preemption: more to recompute
    assert admitted(chunked_plan(full, 8, 16)) == [(0, 8)]
    assert full.waiting[0].request.request_id == 1 and full.kv.used == 5


def test_samples_share_the_prompts_whole_blocks() -> None:
    """Four samples of a 40-token prompt (two whole blocks of 16 and a partial one) at 60 tokens each: the
    two whole blocks once, each sample's other two of its four; a window keeps nothing to share."""
    cache = PagedKVCache(100, 16)
    assert cache.blocks_for(60, 4, 40) == 2 + 4 * 2
    assert cache.blocks_for(40, 4, 40) == 2 + 4 * 1  # the partial prompt block, copied for each sample
    assert cache.blocks_for(60, 1, 40) == cache.blocks_for(60) == 4
    assert PagedKVCache(100, 16, window=30).blocks_for(60, 4, 40) == 4 * 2
    cache.grow(7, 60, 4, 40)
    assert cache.used == 10 and cache.held == {7: 10}


def test_a_sampled_request_reserves_its_generation_and_is_no_victim() -> None:
    queue = Queue(deque([Active(Request(0, 0.0, 8, 4, samples=2), 8), Active(Request(1, 0.0, 8, 9), 8)]), [],
                  PagedKVCache(6, 4))
    plan = continuous_plan(queue, 8, 100)
    assert admitted(plan) == [(0, 8), (1, 8)] and queue.kv.used == 2 + 2 * 1 + 2  # 11 tokens each: 3 blocks
    for active, new in plan:
        active.computed += new
        active.generated = 1
    queue.running[1].computed = 12  # the single one needs a fourth block; only it may go
    assert admitted(continuous_plan(queue, 8, 100)) == [(0, 1)]
    assert queue.waiting[0].request.request_id == 1


def test_a_chunk_runs_without_a_free_block() -> None:
    """A prompt's blocks are held from its admission, so its next chunk needs no free block (as Vidur's
    Sarathi scheduler has it): the full cache preempts nobody."""
    queue = queue_of(PagedKVCache(5, 4), (20, 3))
    assert admitted(chunked_plan(queue, 8, 12)) == [(0, 12)] and queue.kv.free == 0
    queue.running[0].computed = 12
    assert admitted(chunked_plan(queue, 8, 12)) == [(0, 8)] and queue.running[0].preemptions == 0


def test_decodes_go_on_past_a_sequence_preempted_for_an_earlier_one() -> None:
    """Request 2 samples two sequences (it holds its whole generation and is never a victim): request 0's
    step preempts request 1, and request 2 still decodes after it."""
    cache = PagedKVCache(8, 4)
    sampled = Request(2, 2.0, 8, 2, samples=2)  # 2 shared prompt blocks and 1 more per sample
    queue = Queue(deque([Active(Request(0, 0.0, 8, 9), 8), Active(Request(1, 1.0, 7, 9), 7),
                         Active(sampled, 8)]), [], cache)
    for active, new in continuous_plan(queue, 8, 100):
        active.computed += new
        active.generated = 1
    assert len(queue.running) == 3 and cache.used == 2 + 2 + 4 == cache.capacity
    assert admitted(continuous_plan(queue, 8, 100)) == [(0, 1), (2, 1)]
    assert [a.request.request_id for a in queue.waiting] == [1]


def test_sampled_requests_hold_their_blocks_apart() -> None:
    cache = PagedKVCache(100, 4)
    queue = Queue(deque(Active(Request(i, 0.0, 8, 5, samples=2), 8) for i in range(2)), [], cache)
    continuous_plan(queue, 8, 100)
    each = cache.blocks_for(12, 2, 8)
    assert len(cache.held) == 2 and cache.used == 2 * each


def test_no_prompt_is_admitted_while_a_sequence_is_swapped_out() -> None:
    host = HostSpace(10, 10 * 64)
    queue = Queue(deque([Active(Request(1, 1.0, 4, 3), 4)]), [], PagedKVCache(100, 4), host)
    out = Active(Request(0, 0.0, 4, 3), 4, computed=4, generated=1)
    queue.running.append(out)
    queue.hold(out, 4)
    queue.preempt(out)
    assert queue.swapped == [out] and queue.kv.used == 0
    queue.preempted = 0
    assert admitted(continuous_plan(queue, 8, 100)) == [(0, 1)]  # copied back to decode; request 1 waits
    assert [a.request.request_id for a in queue.waiting] == [1]


def test_a_windowed_cache_grows_a_sequence_to_the_window_only() -> None:
    cache = PagedKVCache(10, 4, window=9)  # keeps the last 8 tokens: 2 blocks
    assert cache.try_grow(1, 20) and cache.held == {1: 2}
    assert cache.try_grow(2, 3, 1, 0) and cache.held[2] == 1
    shared = PagedKVCache(10, 4)  # two samples of an 8-token prompt: its 2 blocks shared, 1 more each
    assert shared.try_grow(3, 9, 2, 8) and shared.held == {3: 4}
    assert PagedKVCache(10, 1).try_grow(5, 3, 2)  # no prompt given: nothing shared, 3 blocks each
    assert PagedKVCache(6, 1).try_grow(5, 3, 2) and not PagedKVCache(5, 1).try_grow(5, 3, 2)
