"""Capacity: the highest request rate a configuration serves within its SLO (pure).

A rate meets the SLO when at least ``attainment`` of its requests (rejected ones included) meet every
objective. The same requests are replayed at every rate (the same seed: each arrival gap is the same
exponential draw over the rate), so a faster rate only brings them closer together. The search runs
the requests all at once first (the saturated throughput bounds any rate the chip sustains; if even
that meets the SLO, it is the capacity), then halves the rate from there until one meets the SLO, then
bisects (geometrically) between the highest rate that met it and the lowest that did not until they
are within ``tolerance`` of each other. A configuration that misses the SLO even at 1/1024 of its
saturated throughput, or completes none of the requests (the cache holds none of them), has no
capacity (0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LOWEST = 1 / 1024  # of the saturated throughput


@dataclass(frozen=True)
class Probe:
    rate: float | None  # requests per second; None: all at time 0
    summary: dict[str, Any]

    @property
    def attained(self) -> float:
        return float(self.summary["slo_attained"])


@dataclass(frozen=True)
class Capacity:
    rate: float  # requests per second: the highest rate found to meet the SLO (0: none)
    probes: tuple[Probe, ...]  # every run, in the order run
    best: Probe | None  # the run at that rate (the requests all at once when even they met it); None: none met


def highest_rate(run_at: Callable[[float | None], dict[str, Any]], attainment: float,
                 tolerance: float = 0.05) -> Capacity:
    """The highest rate whose run (``run_at(rate)``: a serving summary with ``slo_attained``) meets the SLO."""
    probes: list[Probe] = []

    def meets(rate: float | None) -> bool:
        probes.append(Probe(rate, run_at(rate)))
        return probes[-1].attained >= attainment

    if meets(None):  # even all at once
        return Capacity(float(probes[0].summary["throughput_requests_per_s"]), tuple(probes), probes[0])
    if probes[0].summary["throughput_requests_per_s"] is None:  # none completed: rejected at any rate
        return Capacity(0.0, tuple(probes), None)
    saturated = float(probes[0].summary["throughput_requests_per_s"])
    high, low = saturated, saturated / 2
    while not meets(low):
        high, low = low, low / 2
        if low < saturated * LOWEST:
            return Capacity(0.0, tuple(probes), None)
    while high / low > 1 + tolerance:
        middle = (low * high) ** 0.5
        if meets(middle):
            low = middle
        else:
            high = middle
    return Capacity(low, tuple(probes), next(p for p in probes if p.rate == low))
