"""An iteration's cost as the sum of its parts: the token-wise work and each kind of sequence's attention
(pure).

The steps of a mixed batch's pass (:func:`workloads.blocks.mixed_attention`) are of two kinds: token
steps, whose sizes depend only on the iteration's new tokens T, its emitting sequences E and how its
attention ends (one kind, or several gathered, and the rows of the last kind); and each kind's attention
steps, whose sizes depend only on that kind and its count. Of the token steps, those after the last block
(the head: the final norm and the LM head) depend only on T and E, and the others (the body) not on E. A
step's record depends on its sizes and on where its tensors live (see ``step_key``), and where they live
is decided for the whole pass. When no activation of the pass spills to DRAM, every tensor's home follows
from the steps alone (streamed to the next step, or on chip), and every part costs what it costs in any
other pass with the same parts in the same place: the last kind's output streams into the gather, so a
kind's cost is kept apart by its place (the only one, the last, or another).

That nothing spills is certified before summing, from bounds every part carries (bytes of materialised
activations; the engine places a tensor on chip when it fits beside those live at every step of its life,
so a pass whose live bytes never exceed the activation buffer spills nothing):

- at a token step, at most the token part's ``peak``: every tensor live there at its full size;
- at a kind's step, at most the token tensors live across the attention (``cross``, full size), the
  outputs of the kinds before it (at most ``outputs``, all of them) and its own live tensors (``peak``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from operator import attrgetter
from typing import NamedTuple

from simulator.engine import Prepared
from simulator.engine.records import StepRecord

# a kind's attention step: a mixed batch's ``self_attn.seq<j>.*``, or a uniform pass's products and score ops
_KIND = re.compile(r"\.self_attn\.(?:seq(\d+)\.|(?:qk|av|score_scale|causal_mask_add|softmax)(?:\.|$))")


# Energies are summed exactly as integers in units of 2^-1074 pJ (the smallest double): every float is a
# whole number of them, so a sum is the same in any order or grouping, and its float is correctly rounded.
_SCALE_BITS = 1074


def exact(value: float) -> int:
    """``value`` (finite, pJ) in units of 2^-1074 pJ."""
    numerator, denominator = value.as_integer_ratio()
    return numerator << (_SCALE_BITS - denominator.bit_length() + 1)


def to_float(units: int) -> float:
    return units / (1 << _SCALE_BITS)


class Sums(NamedTuple):
    """What a part adds to its iteration: busy cycles per unit (array, SFU, links), DRAM bytes, launch cycles
    and dynamic energy (exact, see :func:`exact`; None without an energy model). A named tuple: serving sums
    a few of them for every iteration."""

    array: int = 0
    sfu: int = 0
    dram_bytes: int = 0
    launch_cycles: int = 0
    energy: int | None = 0
    link: int = 0

    @property
    def energy_pj(self) -> float:
        return math.nan if self.energy is None else to_float(self.energy)


def total(parts: list[Sums]) -> Sums:
    """What ``parts`` add up to (energy None when any part's is)."""
    if not parts:
        return Sums()
    array, sfu, dram, launches, energy, link = zip(*parts, strict=True)
    return Sums(sum(array), sum(sfu), sum(dram), sum(launches), None if None in energy else sum(energy), sum(link))


def record_sums(records: list[StepRecord], times: list[int]) -> Sums:
    """The sums of ``records``, each counted ``times`` (its block's repeats)."""
    busy = {"array": 0, "sfu": 0, "link": 0}
    dram = launches = 0
    energy: int | None = 0
    for record, count in zip(records, times, strict=True):
        busy[record.unit] += record.total_cycles * count
        dram += record.dram_bytes * count
        launches += record.launch_cycles * count
        if energy is not None:
            energy = None if record.energy_pj != record.energy_pj else energy + exact(record.energy_pj) * count
    return Sums(busy["array"], busy["sfu"], dram, launches, energy, busy["link"])


class TokenPart(NamedTuple):
    sums: Sums
    peak: int  # bytes: most live at a token step (every tensor at its full size)
    cross: int  # bytes: most token tensors live at an attention step (full size)
    outputs: int  # bytes: the attention outputs of one block (full size)


class KindPart(NamedTuple):
    sums: Sums
    peak: int  # bytes: most of its own tensors live at one of its steps (their share, as placed)


class HeadPart(NamedTuple):
    """The token steps after a pass's last block (the final norm, the LM head and its conversions): they
    depend only on the new tokens T and the emitting sequences E."""

    sums: Sums
    peak: int  # bytes: most live at one of its steps (every tensor at its full size)


def joined(body: TokenPart, head: HeadPart) -> TokenPart:
    """A token part from its steps up to the last block's and its head."""
    return TokenPart(total([body.sums, head.sums]), max(body.peak, head.peak), body.cross, body.outputs)


@dataclass(frozen=True)
class Harvest:
    """The parts of one probe's pass, by the index its kinds have in it; its token part apart from its head
    (see :func:`joined`)."""

    body: TokenPart
    head: HeadPart
    kinds: dict[int, KindPart]

    @property
    def token(self) -> TokenPart:
        return joined(self.body, self.head)


def kind_of(step_name: str) -> int:
    """The index of the kind whose attention a step belongs to (0 in a uniform pass: its one kind); -1 for a
    token step."""
    match = _KIND.search(step_name)
    return -1 if match is None else int(match.group(1) or 0)


def _full_bytes(prepared: Prepared) -> dict[str, int]:
    """Each materialised activation's bytes, at its full size."""
    return {name: prepared.lowered.tensors[name].stored_bytes for name in prepared.placement.lifetimes}


def _live(prepared: Prepared, full: dict[str, int]) -> list[int]:
    """Bytes of materialised activations alive at each step of a pass (each of ``full`` bytes)."""
    steps = len(prepared.lowered.steps)
    live = [0] * (steps + 1)
    for name, (start, end) in prepared.placement.lifetimes.items():
        live[start] += full[name]
        live[end + 1] -= full[name]
    return list(accumulate(live))[:steps]


def _head_start(prepared: Prepared) -> int:
    """The first step after a pass's last block: where its head begins."""
    return 1 + max((index for index, step in enumerate(prepared.lowered.steps) if step.op.layer >= 0), default=-1)


def harvest(prepared: Prepared, records: list[StepRecord], times: list[int]) -> Harvest:
    """The parts of a probe's pass, its records counted ``times`` each (see :func:`record_sums`)."""
    steps = prepared.lowered.steps
    owners = _owners(prepared)
    last_block = _head_start(prepared) - 1
    by_owner: dict[int, tuple[list[StepRecord], list[int]]] = {}
    for index, (owner, record, count) in enumerate(zip(owners, records, times, strict=True)):
        if owner < 0:
            chosen, counts = by_owner.setdefault(-2 if index > last_block else -1, ([], []))
            chosen.append(record)
            counts.append(count)
    full = _full_bytes(prepared)
    live = _live(prepared, full)
    cross = [0] * (len(steps) + 1)  # token tensors only
    outputs = 0
    first_layer = min((s.op.layer for s in steps if s.op.layer >= 0), default=-1)
    for name, (start, end) in prepared.placement.lifetimes.items():
        if owners[start] < 0:
            cross[start] += full[name]
            cross[end + 1] -= full[name]
        elif owners[end] < 0 and steps[start].op.layer == first_layer:
            outputs += full[name]
    cross = list(accumulate(cross))
    kind_steps = [index for index, owner in enumerate(owners) if owner >= 0]
    body = TokenPart(record_sums(*by_owner.get(-1, ([], []))),
                     max((live[index] for index, owner in enumerate(owners[:last_block + 1]) if owner < 0),
                         default=0),
                     max((cross[index] for index in kind_steps), default=0), outputs)
    head = HeadPart(record_sums(*by_owner.get(-2, ([], []))), max(live[last_block + 1:], default=0))
    return Harvest(body, head, kind_parts(prepared, records.__getitem__, times, owners))


def kind_parts(prepared: Prepared, record_of: Callable[[int], StepRecord], times: list[int],
               owners: list[int] | None = None) -> dict[int, KindPart]:
    """The kinds' parts of a probe's pass, by their index in it, from the records of their steps alone
    (``record_of`` a step's index; each counted ``times``): a probe that is costed for its kinds need not
    cost its token steps."""
    owners = owners or _owners(prepared)
    peaks = kind_peaks(prepared, owners)
    return {kind: KindPart(record_sums([record_of(index) for index in indices], [times[index] for index in indices]),
                           peaks[kind])
            for kind, indices in kind_steps(prepared, owners).items()}


def kind_steps(prepared: Prepared, owners: list[int] | None = None) -> dict[int, list[int]]:
    """Each kind's steps in a probe's pass (their indices), by the kind's index."""
    steps_of: dict[int, list[int]] = {}
    for index, owner in enumerate(owners or _owners(prepared)):
        if owner >= 0:
            steps_of.setdefault(owner, []).append(index)
    return steps_of


def kind_peaks(prepared: Prepared, owners: list[int] | None = None) -> dict[int, int]:
    """Each kind's ``peak`` in a probe's pass (see :class:`KindPart`), by the kind's index."""
    owners = owners or _owners(prepared)
    own: dict[int, list[tuple[int, int, int]]] = {}  # kind -> (first step, last step, share) of its tensors
    for name, (start, end) in prepared.placement.lifetimes.items():
        if owners[start] >= 0:
            own.setdefault(owners[start], []).append((start, end, prepared.placement.footprint_bytes[name]))
    return {kind: _peak(own.get(kind, []), indices) for kind, indices in kind_steps(prepared, owners).items()}


def _owners(prepared: Prepared) -> list[int]:
    """Each step's kind (see :func:`kind_of`)."""
    return [kind_of(step.op.name) for step in prepared.lowered.steps]


def head_alone(prepared: Prepared, records: list[StepRecord]) -> HeadPart:
    """The head of a pass from a probe of it alone (:meth:`ModelSpec.head_trace`): its steps after the block
    that makes its input, as :func:`harvest` takes them."""
    start = _head_start(prepared)
    live = _live(prepared, _full_bytes(prepared))
    return HeadPart(record_sums(records[start:], [1] * (len(records) - start)), max(live[start:]))


def _peak(intervals: list[tuple[int, int, int]], steps: list[int]) -> int:
    """Most bytes of a kind's tensors (their intervals of steps and shares) live at one of its ``steps``."""
    return max((sum(share for start, end, share in intervals if start <= index <= end) for index in steps), default=0)


_PEAK = attrgetter("peak")


def certified(token: TokenPart, kinds: list[KindPart], capacity: int) -> bool:
    """Whether a pass of these parts spills nothing (see the module docstring)."""
    attention = token.cross + token.outputs + max(map(_PEAK, kinds), default=0)
    return max(token.peak, attention) <= capacity
