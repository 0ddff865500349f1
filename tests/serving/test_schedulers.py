"""One iteration's plan under chunked prefill, on hand-made queues: the token budget shared by prompts being
prefilled, sequences swapped back in and new admissions, in that order."""

from __future__ import annotations

from collections import deque

from simulator.serving.kv_cache import PagedKVCache
from simulator.serving.requests import Request
from simulator.serving.schedulers import Active, Queue, chunked_plan
from simulator.serving.swap import HostSpace


def prefilling(request_id: int, computed: int) -> Active:
    return Active(Request(request_id, float(request_id), 100, 5), 100, computed)


def test_running_prompts_stop_when_the_budget_is_spent() -> None:
    queue = Queue(deque(), [prefilling(0, 40), prefilling(1, 30)], PagedKVCache(100, 16))
    for active in queue.running:
        queue.hold(active, 100)
    first = queue.running[0]
    assert chunked_plan(queue, 64, 60) == [(first, 60)]


def test_a_swapped_prompt_and_an_admission_share_what_is_left_of_the_budget() -> None:
    queue = Queue(deque(), [], PagedKVCache(100, 16), HostSpace(100, 100 * 1024))
    swapped, waiting = prefilling(0, 40), Active(Request(1, 1.0, 50, 5), 50)
    swapped.swapped_blocks = 3
    queue.host.take(3)  # type: ignore[union-attr]
    queue.swapped.append(swapped)
    queue.waiting.append(waiting)
    assert chunked_plan(queue, 64, 80) == [(swapped, 60), (waiting, 20)]
    assert queue.running == [swapped, waiting] and queue.copied_blocks == 3


def decoding(request_id: int, computed: int) -> Active:
    """A request past its 10-token prompt, ``computed`` tokens cached."""
    return Active(Request(request_id, float(request_id), 10, 500), 10, computed, generated=computed - 9)


def swapped_out(queue: Queue, active: Active, blocks: int) -> None:
    active.swapped_blocks = blocks
    queue.host.take(blocks)  # type: ignore[union-attr]
    queue.swapped.append(active)


def test_a_swapped_prompt_takes_at_most_the_budget_and_a_decode_its_last_token() -> None:
    queue = Queue(deque(), [], PagedKVCache(100, 16), HostSpace(100, 100 * 1024))
    swapped_out(queue, prefilling(0, 40), 3)
    assert chunked_plan(queue, 64, 50) == [(queue.running[0], 50)]
    queue = Queue(deque(), [decoding(0, 20), decoding(1, 20)], PagedKVCache(100, 16), HostSpace(100, 100 * 1024))
    for active in queue.running:
        queue.hold(active, 20)
    late = decoding(2, 20)
    swapped_out(queue, late, 2)
    assert chunked_plan(queue, 64, 3) == [(queue.running[0], 1), (queue.running[1], 1), (late, 1)]


def test_a_swapped_sequence_waits_for_room_within_max_batch() -> None:
    queue = Queue(deque(), [decoding(0, 20), decoding(1, 20)], PagedKVCache(100, 16), HostSpace(100, 100 * 1024))
    for active in queue.running:
        queue.hold(active, 20)
    swapped_out(queue, decoding(2, 20), 2)
    assert [active.request.request_id for active, _ in chunked_plan(queue, 2, 8)] == [0, 1]
    assert len(queue.swapped) == 1 and queue.copied_blocks == 0


def test_every_block_swapped_out_in_an_iteration_is_copied() -> None:
    """A full cache: the first decode needs a block, so the latest arrival is swapped out; the second then finds
    none free and is swapped out itself. Both sequences' blocks cross the host link, and one swapped out
    earlier stays out although a block is free now: an iteration that preempts swaps nothing in (vLLM)."""
    queue = Queue(deque(), [decoding(0, 32), decoding(1, 16), decoding(2, 15)], PagedKVCache(4, 16),
                  HostSpace(100, 100 * 1024))
    for active in queue.running:
        queue.hold(active, active.computed)
    earlier = Active(Request(3, 0.5, 10, 500), 10, 10, generated=1)
    swapped_out(queue, earlier, 1)
    first = queue.running[0]
    assert chunked_plan(queue, 64, 64) == [(first, 1)]
    assert queue.preempted == 2 and queue.copied_blocks == 1 + 1 and queue.running == [first]
    assert [active.request.request_id for active in queue.swapped] == [3, 1, 2] and queue.kv.free == 1
