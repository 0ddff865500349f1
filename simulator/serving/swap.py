"""Swap-to-host preemption: a preempted sequence's KV blocks copied to the host's memory and back (pure).

vLLM's swap preemption: when the cache runs out, the victim's blocks are copied over the chip's host link
into a swap space of fixed size in host memory, and copied back when the sequence is scheduled again, which
then resumes where it stopped (nothing is recomputed). The copies are blocking: an iteration that swaps
blocks out or in takes the pass's time plus the copies' (bytes over the link's one-direction bandwidth),
and their energy (bytes x 8 x the link's pJ per bit, on every chip of a tensor-parallel split, each
copying its share of the heads). A swap space too small for a victim's blocks ends the run, as vLLM's does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workloads.errors import InputError

PREEMPTIONS = ("recompute", "swap")


@dataclass
class HostSpace:
    """The swap space in host memory, in KV blocks."""

    capacity: int  # blocks
    space_bytes: int
    used: int = 0
    peak: int = 0

    def take(self, blocks: int) -> None:
        if blocks > self.capacity - self.used:
            raise InputError(f"the host swap space ({self.space_bytes:,} bytes, {self.capacity} KV blocks) has no "
                             f"room for a preempted sequence's {blocks} blocks ({self.used} in use): raise "
                             f"--swap-space or use --preemption recompute")
        self.used += blocks
        self.peak = max(self.peak, self.used)

    def give_back(self, blocks: int) -> None:
        self.used -= blocks


@dataclass(frozen=True)
class SwapLink:
    """What copying KV blocks between a chip and its host costs (one chip's blocks; ``chips`` copy at once)."""

    block_bytes: int
    bytes_per_s: float
    pj_per_bit: float
    chips: int = 1

    def cycles(self, blocks: int, clock_hz: float) -> int:
        """Cycles of the chip's clock that copying ``blocks`` blocks one way takes (whole cycles)."""
        return math.ceil(blocks * self.block_bytes * clock_hz / self.bytes_per_s) if blocks else 0

    def energy_pj(self, blocks: int) -> float:
        return blocks * self.block_bytes * 8 * self.pj_per_bit * self.chips
