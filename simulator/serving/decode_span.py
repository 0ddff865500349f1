"""A one-token kind of sequence over a span of cache lengths, costed a length at a time (pure).

Serving costs an iteration as its token part and each kind's attention (:mod:`.parts`). A kind of one new
token (a decode step: B sequences against one cache length, alone as ``generate``'s step or among other
kinds) comes back one cache length longer every iteration, so its lengths are costed as generation costs
its decode steps (:mod:`simulator.analysis.step_growth`): a probe of the first block's attention holding
the kind is prepared at the span's ends and at the length after its start; where those lower and place
alike and every size grows affinely between them, a length's kind is its growing steps re-costed at their
grown sizes on the start's placement, and its other steps as at the start. A length where fusion could
change is left to a probe of its own. A length's bound on the kind's live bytes (what certifies that its
pass spills nothing) is the larger end's: its tensors' shares grow with the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from simulator.analysis.step_growth import StepSizes, fusion_changes, grown_step, span_growth
from simulator.engine import Prepared, Simulator
from simulator.engine.records import StepRecord
from simulator.serving.parts import KindPart, kind_peaks, kind_steps, record_sums
from workloads.ops import Tensor

SPAN_TOKENS = 256  # cache lengths a span is opened over (halved until its ends grow affinely)


@dataclass(frozen=True)
class DecodeSpan:
    """A kind at cache lengths ``low``..``high`` (see the module docstring)."""

    start: Prepared  # the probe at ``low``
    low: int
    high: int
    grows: dict[int, StepSizes]  # step index -> growth of its sizes per cache token
    skipped: frozenset[int]  # lengths where fusion could change
    steps: tuple[int, ...]  # the kind's steps
    times: tuple[int, ...]  # how often each step of the probe runs in the whole pass
    fixed: dict[int, StepRecord]  # records of the kind's steps that do not grow
    start_peak: int  # bytes: the kind's live bytes at ``low``
    peak: int  # bytes: a bound on them over the span
    tensors: dict[str, Tensor]  # the start's tensors, the growing ones grown to the length last costed

    def covers(self, length: int) -> bool:
        return length == self.low or (self.low < length <= self.high and length not in self.skipped)

    def part(self, length: int, simulator: Simulator) -> KindPart:
        """The kind at ``length`` (one the span covers)."""
        offset, tensors = length - self.low, self.tensors  # every growing tensor is grown before it is read
        records = [self.fixed[index] if index not in self.grows else simulator.step_record(
            self.start, index, grown_step(self.start.lowered.steps[index], self.grows[index], offset,
                                          self.start.lowered.tensors, tensors), tensors) for index in self.steps]
        sums = record_sums(records, [self.times[index] for index in self.steps])
        return KindPart(sums, self.start_peak if length == self.low else self.peak)


def open_span(attention: Callable[[int], Prepared], kind: int, low: int, high: int, simulator: Simulator,
              times: Callable[[Prepared], list[int]]) -> DecodeSpan | None:
    """A span from ``low`` to at most ``high`` of the ``kind``-th kind of the probes ``attention`` prepares
    (at a length; ``times`` counts a probe's steps in the whole pass), halved until its ends grow affinely;
    None when no span of more than two lengths does, or an end spills."""
    start = attention(low)
    while high - low > 2 and not start.spilled:
        end = attention(high)
        grows = span_growth(start, attention(low + 1), end, high - low)  # an end that spills is placed otherwise
        if grows is not None:
            steps, start_peak = kind_steps(start)[kind], kind_peaks(start)[kind]
            return DecodeSpan(start, low, high, grows, frozenset(fusion_changes(start, grows, low, high)),
                              tuple(steps), tuple(times(start)),
                              {index: simulator.step_record(start, index) for index in steps if index not in grows},
                              start_peak, max(start_peak, kind_peaks(end)[kind]), dict(start.lowered.tensors))
        high = low + (high - low) // 2
    return None
