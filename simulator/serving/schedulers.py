"""Schedulers: which sequences run in the next iteration, and how many tokens each (pure).

Every request is a sequence with a prompt to prefill (its prompt, or after a preemption its prompt and
the tokens it had generated: vLLM's recompute) and then one decode token per iteration. An iteration's
plan lists (sequence, new tokens); the KV cache must hold every planned sequence's entries after it.

- ``static``: a batch of waiting requests (first come, first served) of up to ``max_batch`` sequences and
  ``max_tokens`` prompt tokens (a longer prompt runs alone), each with the KV blocks for its whole
  generation reserved up front, runs one prefill of all its prompts, then decode steps until its slowest
  request finishes (a finished request stops computing but its slot stays empty); only then does the
  next batch form.
- ``continuous`` (vLLM's default scheduler before chunked prefill): prefills first. While requests wait,
  admit them first come, first served as long as the running sequences stay within ``max_batch``, the
  iteration's prompt tokens within ``max_tokens`` (a longer prompt runs alone) and the KV cache has
  blocks for the prompt; the admitted prompts run as one prefill iteration. Otherwise every running
  sequence decodes one token.
- ``chunked`` (Sarathi-Serve's stall-free batching): a budget of ``max_tokens`` tokens per iteration.
  Decodes first (one token each), then the prompts already being prefilled, then new admissions (within
  ``max_batch``, while the cache has the blocks of the whole prompt, which an admission holds, as vLLM and
  Vidur allocate them), each taking the next chunk of its prompt that fits what is left of the budget; the
  chunk that completes a prompt emits its first token.

``max_batch`` counts sequences: a request sampling several in parallel counts all of them from its
admission on (as vLLM counts a sequence group), and each of them decoding takes one token of the
``chunked`` budget.

Sequences are ranked first come, first served (by arrival, as vLLM's FCFS policy ranks them): decodes and
prefill chunks run in that order and the latest arrival is preempted first. A decode runs only while a
block is free before it (vLLM's rule for a running sequence: one free block per sequence, whether or not its
step fills its last block; vLLM applies it to running prefill chunks too, Vidur does not, nor does
accelsim: a prompt's blocks are held from its admission); a chunk, only while its blocks fit. Otherwise the
latest-arriving running sequence not yet planned is preempted, or the sequence itself when there is none.
Under recompute preemption (vLLM's for single sequences) its blocks are freed and it waits again at the
head of the queue, to recompute its prompt and generated tokens later. Under swap preemption
(:mod:`.swap`) its blocks are copied to the host and it waits among the swapped, earliest arrival first,
to be copied back and resume where it stopped; as in vLLM, swapped sequences come back only in an iteration
that preempted nothing: ``continuous`` then adds them to the decodes (and admits no new prompt while any
is swapped out), ``chunked`` after the running sequences' tokens and before new admissions, each taking
its next token or prompt chunk from the budget. A request with parallel samples prefills its prompt
once, then decodes every sample each iteration; it holds its whole generation's blocks from admission on
(the prompt's whole blocks shared) and is never preempted (vLLM swaps such groups out rather than
recompute them: holding their blocks keeps them out of both).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter

from simulator.serving.kv_cache import PagedKVCache
from simulator.serving.requests import Request
from simulator.serving.swap import HostSpace

SCHEDULERS = ("static", "continuous", "chunked")


@dataclass(eq=False)
class Active:
    """A request being served: its progress and what the per-request report needs (times in cycles)."""

    request: Request
    target: int  # tokens its prefill computes: the prompt, or after a preemption prompt + generated
    computed: int = 0  # tokens whose KV entries are cached
    generated: int = 0  # output tokens emitted
    first_scheduled: int | None = None
    first_token: int | None = None
    finish: int | None = None
    preemptions: int = 0
    swaps: int = 0  # preemptions that swapped its blocks to the host
    swapped_blocks: int = 0  # blocks it has on the host now
    energy_pj: float = 0.0
    rank: tuple[float, int] = field(init=False)  # first come, first served: see first_come

    def __post_init__(self) -> None:
        self.rank = (self.request.arrival_s, self.request.request_id)

    @property
    def prefilling(self) -> bool:
        return self.computed < self.target

    @property
    def done(self) -> bool:
        return self.generated >= self.request.output_tokens

    @property
    def reserves(self) -> bool:
        """Whether it holds its whole generation's blocks from admission on (parallel samples: never
        preempted)."""
        return self.request.samples > 1


Plan = list[tuple[Active, int]]


# A sequence's rank, first come first served: by arrival (then number, as requests are served); kept on the
# sequence and read in C, as every iteration ranks every running sequence.
first_come: Callable[[Active], tuple[float, int]] = attrgetter("rank")


@dataclass
class Queue:
    """The waiting requests (first come, first served), the running sequences and, under swap preemption
    (``host``), the swapped ones; what the iteration being planned preempted and copied (blocks)."""

    waiting: deque[Active]
    running: list[Active]
    kv: PagedKVCache
    host: HostSpace | None = None  # swap preemption's space on the host; None: recompute preemption
    swapped: list[Active] = field(default_factory=list)
    preempted: int = 0  # in the iteration being planned
    copied_blocks: int = 0  # to or from the host, in the iteration being planned

    def has_room(self, active: Active, max_batch: int) -> bool:
        """Whether ``active``'s sequences (all its samples, from admission on, as vLLM counts a group) join
        the running ones within ``max_batch`` sequences."""
        return sum(a.request.samples for a in self.running) + active.request.samples <= max_batch

    def admit(self, active: Active) -> None:
        self.waiting.popleft()
        self.running.append(active)

    def swap_in(self, active: Active, tokens: int) -> bool:
        """Copy a swapped sequence's blocks back, with room for ``tokens`` cached entries, when they fit."""
        if not self.fits(active, tokens):
            return False
        assert self.host is not None
        self.hold(active, tokens)
        self.host.give_back(active.swapped_blocks)
        self.copied_blocks += active.swapped_blocks
        active.swapped_blocks = 0
        self.swapped.remove(active)
        self.running.append(active)
        return True

    def _blocks(self, active: Active, tokens: int) -> tuple[int, int, int, int]:
        """(sequence, tokens, samples, prompt) of a cache request: a reserving request asks for its whole
        generation."""
        request = active.request
        if active.reserves:
            return id(active), max(tokens, request.final_tokens), request.samples, request.prompt_tokens
        return id(active), tokens, 1, 0

    def fits(self, active: Active, tokens: int) -> bool:
        """Whether ``active`` can hold ``tokens`` cached entries (each of its samples) now."""
        return self.kv.can_grow(*self._blocks(active, tokens))

    def hold(self, active: Active, tokens: int) -> None:
        self.kv.grow(*self._blocks(active, tokens))

    def preempt_for(self, active: Active, tokens: int, planned: set[int], decode: bool = False) -> bool:
        """Free blocks until ``active`` can hold ``tokens`` entries (and, a ``decode`` of a sequence that does
        not reserve its blocks, until a block is free before it), preempting the latest-arriving other
        running sequences not already planned (nor reserving), and hold them; False (and ``active`` itself
        preempted) when it cannot."""
        wanted, kv = self._blocks(active, tokens), self.kv
        needs_free = decode and not active.reserves
        while (needs_free and kv.used >= kv.capacity) or not kv.try_grow(*wanted):
            victims = [a for a in self.running if a is not active and id(a) not in planned and not a.reserves]
            victim = max(victims, key=first_come) if victims else active
            self.preempt(victim)
            if victim is active:
                return False
        return True

    def preempt(self, active: Active) -> None:
        blocks = self.kv.held.get(id(active), 0)
        self.kv.release(id(active))
        self.running.remove(active)
        active.preemptions += 1
        self.preempted += 1
        if self.host is None:
            active.target, active.computed = active.request.prompt_tokens + active.generated, 0
            self.waiting.appendleft(active)
            return
        self.host.take(blocks)
        self.copied_blocks += blocks
        active.swaps += 1
        active.swapped_blocks = blocks
        self.swapped.append(active)
        self.swapped.sort(key=first_come)


def _admit_prompts(queue: Queue, max_batch: int, max_tokens: int, whole: bool) -> Plan:
    """Waiting requests admitted first come, first served while the running ones stay within ``max_batch``,
    their prompts within ``max_tokens`` (the first runs whatever its length) and the cache has their
    blocks: their prompts', or, ``whole``, their whole generations'. Their prefills."""
    plan: Plan = []
    tokens = 0
    while queue.waiting and queue.has_room(queue.waiting[0], max_batch):
        head = queue.waiting[0]
        blocks = head.request.final_tokens if whole else head.target
        if plan and tokens + head.target > max_tokens or not queue.fits(head, blocks):
            break
        queue.hold(head, blocks)
        queue.admit(head)
        plan.append((head, head.target))
        tokens += head.target
    return plan


def static_plan(queue: Queue, max_batch: int, max_tokens: int) -> Plan:
    if not queue.running:  # a new batch: whole generations reserved
        return _admit_prompts(queue, max_batch, max_tokens, whole=True)
    return [(a, 1) for a in queue.running if not a.done]


def continuous_plan(queue: Queue, max_batch: int, max_tokens: int) -> Plan:
    prefills = [] if queue.swapped else _admit_prompts(queue, max_batch, max_tokens, whole=False)
    if prefills:
        return prefills
    plan = _decodes(queue, set())
    if not queue.preempted:  # swapped sequences are decoding: a prompt is prefilled whole
        plan += _swap_in(queue, max_batch, None)
    return plan


def _swap_in(queue: Queue, max_batch: int, budget: int | None) -> Plan:
    """Swapped sequences copied back, earliest arrival first, while the running ones stay within
    ``max_batch``, their tokens (a decode's one, or the next chunk of a prompt) within ``budget`` (None:
    no limit) and the cache has their blocks."""
    plan: Plan = []
    for active in list(queue.swapped):
        if budget is not None and budget <= 0:
            break
        left = active.target - active.computed
        new = (left if budget is None else min(left, budget)) if active.prefilling else 1
        if not queue.has_room(active, max_batch) or budget is not None and new > budget or \
                not queue.swap_in(active, active.computed + new):
            break
        plan.append((active, new))
        if budget is not None:
            budget -= new
    return plan


def chunked_plan(queue: Queue, max_batch: int, max_tokens: int) -> Plan:
    plan = _decodes(queue, set())
    budget = max_tokens - sum(active.request.samples for active, _ in plan)  # a decode's token per sample
    planned = {id(a) for a, _ in plan}
    for active in sorted((a for a in queue.running if a.prefilling), key=first_come):
        if budget <= 0:
            break
        if active not in queue.running:  # preempted for an earlier one
            continue
        chunk = min(active.target - active.computed, budget)
        if queue.preempt_for(active, active.computed + chunk, planned):
            plan.append((active, chunk))
            planned.add(id(active))
            budget -= chunk
    if not queue.preempted and budget > 0:
        swapped_in = _swap_in(queue, max_batch, budget)
        plan += swapped_in
        budget -= sum(new for _, new in swapped_in)
    while budget > 0 and queue.waiting and queue.has_room(queue.waiting[0], max_batch):
        head = queue.waiting[0]
        chunk = min(head.target, budget)
        if not queue.fits(head, head.target):
            break
        queue.hold(head, head.target)
        queue.admit(head)
        plan.append((head, chunk))
        budget -= chunk
    return plan


def _decodes(queue: Queue, planned: set[int]) -> Plan:
    """One token for every running sequence past its prefill, earliest arrival first, preempting as the
    cache requires."""
    plan: Plan = []
    preempted = queue.preempted
    for active in sorted((a for a in queue.running if not a.prefilling), key=first_come):
        if queue.preempted != preempted and active not in queue.running:  # preempted for an earlier one
            continue
        if queue.preempt_for(active, active.computed + 1, planned, decode=True):
            plan.append((active, 1))
            planned.add(id(active))
    return plan


PLANS: dict[str, Callable[[Queue, int, int], Plan]] = {
    "static": static_plan, "continuous": continuous_plan, "chunked": chunked_plan}
