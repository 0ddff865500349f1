"""The serving loop: requests arrive, a scheduler plans each iteration, the engine times it (pure).

Time is kept in cycles of the chip's clock (a request is seen at the first cycle at or after its
arrival), so a run's times are exact sums of iteration costs. An iteration starts when the previous one
ends, or, with nothing to run, at the next arrival; the tokens it emits are out when it ends. Its
energy is the engine's (dynamic, and the chip's leakage over its time), shared among its sequences by
their new tokens; the leakage of idle time between iterations counts in the run's total only.

Under swap preemption (:mod:`.swap`) an iteration that copies KV blocks to or from the host takes the
copies' time and energy beyond its pass's. When planning preempts every sequence it planned (a lone
sequence that fills the cache finds no block free for its decode), the iteration is the swap-out's copies
alone, or under recompute nothing: the next is planned at once.

A request is rejected on arrival when the KV cache could never hold its whole generation (its prompt
and every output token but the last).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

from simulator.serving.iteration import IterationCoster
from simulator.serving.kv_cache import PagedKVCache
from simulator.serving.requests import Request
from simulator.serving.schedulers import PLANS, Active, Plan, Queue
from simulator.serving.swap import HostSpace, SwapLink
from workloads.mixed import MixedBatch, Sequence


@dataclass(frozen=True)
class IterationRow:
    """One iteration (times in cycles; energy in pJ)."""

    start: int
    cycles: int
    prefill_sequences: int
    prefill_tokens: int
    decode_sequences: int
    emitted: int
    kv_blocks: int  # in use after it
    energy_pj: float
    swapped_blocks: int = 0  # copied to or from the host


@dataclass(frozen=True)
class Served:
    """What a run leaves: every request (served or rejected) and every iteration."""

    requests: list[Active]
    rejected: list[Request]
    iterations: list[IterationRow]
    end: int  # cycles: when the last iteration ended
    kv_capacity: int  # blocks
    kv_peak: int
    idle_energy_pj: float
    host_peak: int | None = None  # blocks on the host at most (swap preemption), None: recompute


@dataclass(frozen=True)
class ServeSettings:
    """How requests are served: the scheduler (:mod:`.schedulers`), its limits, and the routing imbalance a
    mixture of experts runs at."""

    scheduler: str
    max_batch: int  # sequences
    max_tokens: int  # new tokens per iteration (continuous: prompt tokens of a prefill iteration)
    expert_imbalance: float | None = None
    preemption: str = "recompute"  # or "swap" (:mod:`.swap`)
    swap_space_bytes: int = 0  # host memory for swapped KV blocks (swap preemption)


def serve(requests: list[Request], coster: IterationCoster, kv: PagedKVCache, settings: ServeSettings,
          clock_hz: float, progress: Callable[[int], None] | None = None, link: SwapLink | None = None) -> Served:
    """Serve ``requests`` (sorted by arrival) with ``settings``; ``progress`` is told of each completion;
    ``link`` prices swapping (needed under swap preemption)."""
    plan_next = PLANS[settings.scheduler]
    # rejected on arrival: whether a request can ever fit depends on the cache's capacity alone
    fits = [kv.blocks_for(r.final_tokens, r.samples, r.prompt_tokens) <= kv.capacity for r in requests]
    rejected = [request for request, fit in zip(requests, fits, strict=True) if not fit]
    arrivals = deque((arrival_cycle(r, clock_hz), r) for r, fit in zip(requests, fits, strict=True) if fit)
    host = None
    if settings.preemption == "swap":
        assert link is not None, "swap preemption needs the host link's costs"
        host = HostSpace(settings.swap_space_bytes // link.block_bytes, settings.swap_space_bytes)
    queue = Queue(deque(), [], kv, host)
    served: list[Active] = []
    rows: list[IterationRow] = []
    now, idle_cycles = 0, 0
    while arrivals or queue.waiting or queue.running or queue.swapped:
        while arrivals and arrivals[0][0] <= now:
            request = arrivals.popleft()[1]
            active = Active(request, request.prompt_tokens)
            queue.waiting.append(active)
            served.append(active)
        queue.preempted = queue.copied_blocks = 0
        plan = plan_next(queue, settings.max_batch, settings.max_tokens)
        if not plan and queue.preempted:  # all it planned was preempted (a lone sequence that filled the cache)
            if queue.copied_blocks:  # swapped out: the copies take their time (vLLM runs a step of cache copies)
                rows.append(_copies_only(now, queue, link, clock_hz, coster.static_mw))
                now += rows[-1].cycles
            continue  # plan again at once: the preempted wait at the head of the queue
        if not plan:
            if not arrivals:  # pragma: no cover - a scheduler that plans nothing with work left is a bug
                raise AssertionError("nothing to schedule while requests wait")
            idle_cycles += max(0, arrivals[0][0] - now)
            now = max(now, arrivals[0][0])
            continue
        runs = [(active, new, _sequences(active, new)) for active, new in plan]
        batch = MixedBatch(tuple(chain.from_iterable(run for _, _, run in runs)), settings.expert_imbalance)
        cost = coster.cost(batch)
        copy_cycles, copy_pj = _copies(queue.copied_blocks, link, clock_hz, coster.static_mw)
        cycles, energy_pj = cost.cycles + copy_cycles, cost.energy_pj + copy_pj
        end = now + cycles
        rows.append(_advance(runs, batch.tokens, now, end, energy_pj, queue))
        _retire(plan, end, queue, progress)
        now = end
    idle = coster.static_mw * idle_cycles / clock_hz * 1e9  # mW x s = 1e9 pJ
    return Served(served, rejected, rows, now, kv.capacity, kv.peak, idle, None if host is None else host.peak)


def _copies(blocks: int, link: SwapLink | None, clock_hz: float, static_mw: float) -> tuple[int, float]:
    """Cycles and energy (pJ) of copying ``blocks`` KV blocks to or from the host: the link's, and the chips'
    leakage while the iteration waits for them (the copies are blocking)."""
    if not blocks:
        return 0, 0.0
    assert link is not None
    cycles = link.cycles(blocks, clock_hz)
    return cycles, link.energy_pj(blocks) + static_mw * cycles / clock_hz * 1e9  # mW x s = 1e9 pJ


def _retire(plan: Plan, end: int, queue: Queue, progress: Callable[[int], None] | None) -> None:
    """The planned requests that are done leave at ``end``, freeing their blocks."""
    for active, _ in plan:
        if active.done and active in queue.running:
            active.finish = end
            queue.running.remove(active)
            queue.kv.release(id(active))
            if progress is not None:
                progress(1)


def _copies_only(start: int, queue: Queue, link: SwapLink | None, clock_hz: float, static_mw: float) -> IterationRow:
    """An iteration that only copies the blocks its planning swapped out to the host."""
    cycles, energy_pj = _copies(queue.copied_blocks, link, clock_hz, static_mw)
    return IterationRow(start, cycles, 0, 0, 0, 0, queue.kv.used, energy_pj, queue.copied_blocks)


def arrival_cycle(request: Request, clock_hz: float) -> int:
    """The first cycle at or after the request's arrival."""
    return math.ceil(request.arrival_s * clock_hz)


def _sequences(active: Active, new: int) -> tuple[Sequence, ...]:
    """The sequences an active request runs: ``new`` tokens after its cached ones, once while it
    prefills (its samples share the prompt), for each sample when it decodes; a sequence emits when its
    tokens finish the prefill or decode a token."""
    # made without Sequence's checks (a hot path): new >= 1 and computed >= 0 hold by the schedulers' rules
    computed = active.computed
    if active.prefilling:
        return (tuple.__new__(Sequence, (new, computed, computed + new >= active.target)),)
    return (tuple.__new__(Sequence, (new, computed, True)),) * active.request.samples


def _advance(runs: list[tuple[Active, int, tuple[Sequence, ...]]], tokens: int, start: int, end: int,
             energy_pj: float, queue: Queue) -> IterationRow:
    """Apply one iteration (each planned request, its new tokens and its sequences; ``tokens`` new tokens in
    all) to its requests; its row (decode sequences and emitted tokens count every sample)."""
    prefill_sequences = prefill_tokens = decode_sequences = emitted = 0
    for active, new, sequences in runs:
        if active.first_scheduled is None:
            active.first_scheduled = start
        if active.prefilling:
            prefill_sequences, prefill_tokens = prefill_sequences + 1, prefill_tokens + new
        else:
            decode_sequences += len(sequences)
        active.computed += new
        active.energy_pj += energy_pj * (new * len(sequences)) / tokens
        if sequences[0].emits:
            active.generated += 1
            emitted += active.request.returned
            if active.first_token is None:
                active.first_token = end
    return IterationRow(start, end - start, prefill_sequences, prefill_tokens, decode_sequences, emitted,
                        queue.kv.used, energy_pj, queue.copied_blocks)
