"""What a collective costs on a system's links (pure closed forms).

A collective over ``ranks`` chips ends with B bytes on each chip (the reduced tensor of an all-reduce, the
gathered one of an all-gather). The group's chips form rings, one per dimension they span:

- on a ``ring``, any group is one ring (a group smaller than the system's ring closes through the chips
  between, whose hops are not counted);
- on an a x b ``torus_2d`` (a <= b), a group of r chips takes a ring along the longer dimension when r
  divides b, else r / b whole such rings (a 2-D group of (r / b) x b);
- behind a ``switch``, any group is one ring through the switch.

Along one ring of n chips a reduce-scatter and an all-gather of a buffer of B bytes each move (n - 1) / n x B
per chip, in n - 1 steps; an all-reduce is both: 2 (n - 1) / n x B in 2 (n - 1) steps. Ring and torus links
run both ways, so a ring sends half the buffer each way: a chip sends at 2 x the link bandwidth; behind a
switch a chip sends at its links' bandwidth, links_per_chip x link. On a 2-D group (a' x b) an all-reduce is a
reduce-scatter along b, an all-reduce of the B / b scattered bytes along a', and an all-gather along b; an
all-gather gathers along a' (to B / b), then along b. An all-to-all (each chip sends B / n of its B bytes
to each other chip) runs dimension by dimension with all B each time: along a ring of n whose links run both
ways, the share for the chip d hops away crosses min(d, n - d) links, B / n x sum of min(d, n - d) bytes
sent per chip over its two links; behind a switch (n - 1) / n x B; n - 1 steps. A ``send`` (a pipeline
stage's output) moves B once over one link. Time: each phase's bytes over its chip bandwidth, plus one link
latency per step; the links do not overlap the chip's own work (the collectives run between the products they
join).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from simulator.spec.system import Interconnect
from workloads.errors import InputError
from workloads.vocabulary import COLLECTIVE_ROLES


@dataclass(frozen=True)
class CollectiveCost:
    seconds: float
    link_bytes: int  # bytes each chip sends over its links
    steps: int


def group_rings(interconnect: Interconnect, ranks: int) -> tuple[int, ...]:
    """The rings a group of ``ranks`` chips runs its collectives on: (n,) or (a', b) (see the module)."""
    topology = interconnect.topology
    if topology == "torus_2d":
        assert interconnect.shape is not None  # checked by System
        short, long = sorted(interconnect.shape)
        if long % ranks == 0:
            return (ranks,)
        if ranks % long == 0 and short % (ranks // long) == 0:
            return (ranks // long, long)
        raise InputError(f"a group of {ranks} chips does not fit a {short} x {long} torus as whole rings")
    return (ranks,)


def _ring(chips: int, buffer: Fraction, passes: int) -> tuple[Fraction, int]:
    """(bytes each chip sends, steps) of ``passes`` passes (reduce-scatter, all-gather) around a ring."""
    return passes * (chips - 1) * buffer / chips, passes * (chips - 1)


def _exchange(chips: int, buffer: Fraction, switched: bool) -> tuple[Fraction, int]:
    """(bytes each chip sends, steps) of an all-to-all of ``buffer`` bytes per chip along one ring."""
    hops = chips - 1 if switched else sum(min(d, chips - d) for d in range(1, chips))
    return buffer * hops / chips, chips - 1


def _phases(role: str, rings: tuple[int, ...], buffer: Fraction, switched: bool) -> list[tuple[Fraction, int]]:
    if role == "send":
        return [(buffer, 1)]
    if role == "all_to_all":
        return [_exchange(chips, buffer, switched) for chips in reversed(rings)]
    if len(rings) == 1:
        return [_ring(rings[0], buffer, 2 if role == "all_reduce" else 1)]
    across, along = rings
    if role == "all_reduce":
        return [_ring(along, buffer, 1), _ring(across, buffer / along, 2), _ring(along, buffer, 1)]
    return [_ring(across, buffer / along, 1), _ring(along, buffer, 1)]


def collective_cost(role: str, buffer_bytes: int, ranks: int, interconnect: Interconnect) -> CollectiveCost:
    """The cost of one collective ``role`` (all_reduce, all_gather, all_to_all, send) of ``buffer_bytes``
    over ``ranks`` chips."""
    if role not in COLLECTIVE_ROLES:
        raise ValueError(f"unknown collective {role!r}")
    rings = group_rings(interconnect, ranks)
    phases = _phases(role, rings, Fraction(buffer_bytes), interconnect.topology == "switch")
    link = interconnect.link_bytes_per_s
    if role == "send":
        bandwidth = link
    elif interconnect.topology == "switch":
        bandwidth = interconnect.links_per_chip * link
    else:
        bandwidth = 2 * link
    sent = sum(bytes_ for bytes_, _ in phases)
    steps = sum(count for _, count in phases)
    return CollectiveCost(float(sent) / bandwidth + steps * interconnect.latency_s, -(-sent.numerator //
                                                                                       sent.denominator), steps)
