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
