"""Sample groups: a batch runs as B/g consecutive passes of g samples when that is faster.

A larger group reads each weight once for more samples and fills more of each fold; a smaller one keeps
its activations on chip. The engine tries the divisors g of the batch from the largest down and keeps
the fastest among those that move no more DRAM bytes per sample than one sample at a time (ties: fewer
DRAM bytes); one sample at a time always qualifies. Only groups that fit the chip's DRAM are candidates
(every sample's state, one group's activations: see capacity); a batch that no group fits is refused. A
group whose activations all stay on chip is at least as fast, and moves no more bytes, as any divisor of
it (every op's max(compute, transfer) only grows when split, and weights are read once per pass), so the
divisors of such a group are not tried. One sample's bytes are computed only when needed: with streamed
weights, one sample moves at least every matrix weight once, and a group within B times that qualifies
without running it. The groups that qualify for a batch of B also qualify for 2B (where they fit its
DRAM too), so latency at 2B is then never more than twice that at B, and DRAM bytes at B never more
than B times those at 1.

Traces that cannot be rebuilt at another batch (``Trace.rebatch`` is None: traced or hand-built) run
as one group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from simulator.engine.capacity import Footprint, check_fits
from simulator.engine.records import StepRecord
from simulator.engine.results import record_totals
from simulator.spec.hardware import Hardware
from simulator.units import ceil_div
from workloads.ops import Trace


def divisors(n: int) -> list[int]:
    """Divisors of ``n``, largest first."""
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)}, reverse=True)


def one_sample_floor(records: list[StepRecord], hardware: Hardware) -> int:
    """Bytes that any pass moves whatever its batch: with streamed weights, every matrix op reads its
    stored weights (values, indices, scales) from DRAM at least once."""
    if not hardware.memory.weights_streamed:
        return 0
    return sum(ceil_div(record.weight_bits + record.scale_bits, 8) for record in records if record.unit == "array")


class PassOutcome(NamedTuple):
    """One pass's per-op records, whether any of its activations spilled to DRAM, and its footprint."""

    records: list[StepRecord]
    spilled: bool
    footprint: Footprint


def run_in_groups(trace: Trace, run: Callable[[Trace], PassOutcome],
                  hardware: Hardware) -> tuple[list[StepRecord], int, Footprint]:
    """(per-op records of the whole batch, samples per group, the footprint of the run as grouped)."""
    whole = run(trace)
    batch = int(trace.workload.get("batch", 1))
    rebatch = trace.rebatch
    fits = whole.footprint.fits(hardware)
    if (fits and not whole.spilled) or rebatch is None or batch == 1:
        check_fits(whole.footprint, hardware, trace.model, chips_of(trace))
        return whole.records, batch, whole.footprint
    one_sample: list[int] = []  # DRAM bytes of one sample alone, computed when first needed
    floor = one_sample_floor(whole.records, hardware)

    def qualifies(dram_bytes: int) -> bool:
        if dram_bytes <= batch * floor:  # within B x a lower bound of one sample's bytes: no need to run it
            return True
        if not one_sample:
            one_sample.append(record_totals(run(rebatch(1)).records, hardware)[1])
        return dram_bytes <= batch * one_sample[0]

    tried = _groups_that_fit(trace, run, hardware, whole)
    # The fastest group that qualifies, the larger on a tie (one always qualifies among those that fit: a
    # group that spilled nothing, or one sample).
    best_group, best = next((group, part) for key, group, part in sorted(tried, key=lambda t: (t[0], -t[1]))
                            if not part.spilled or group == 1 or qualifies(key[1]))
    passes = batch // best_group
    footprint = best.footprint.for_passes(passes)
    if best_group == batch:
        return whole.records, batch, footprint
    merged = [chosen.scaled(passes, full) for full, chosen in zip(whole.records, best.records, strict=True)]
    return merged, best_group, footprint


def _groups_that_fit(trace: Trace, run: Callable[[Trace], PassOutcome], hardware: Hardware, whole: PassOutcome,
                     ) -> list[tuple[tuple[int, int], int, PassOutcome]]:
    """((cycles, DRAM bytes) of the whole batch, group, one group's pass) of every group worth trying that
    fits the chip's DRAM; refused when not even one sample per pass fits."""
    batch = int(trace.workload.get("batch", 1))
    assert trace.rebatch is not None
    tried = []
    settled: list[int] = []  # groups that fit and kept everything on chip: their divisors cannot do better
    footprint = whole.footprint
    for group in divisors(batch):
        if any(done % group == 0 for done in settled):
            continue
        passes = batch // group
        part = whole if group == batch else run(trace.rebatch(group))
        footprint = part.footprint.for_passes(passes)
        if not footprint.fits(hardware):
            continue
        cycles, dram_bytes = record_totals(part.records, hardware)
        tried.append(((cycles * passes, dram_bytes * passes), group, part))
        if not part.spilled:
            settled.append(group)
    if not tried:
        check_fits(footprint, hardware, trace.model, chips_of(trace))  # the last: one sample
    return tried


def chips_of(trace: Trace) -> int:
    """The chips a trace is one of (its tensor- and expert-parallel degrees, its pipeline's stages)."""
    return int(trace.workload.get("tp", 1)) * int(trace.workload.get("ep", 1)) * int(trace.workload.get("pp", 1))
