"""What a run holds in DRAM at once, and whether the chip has room for it (pure).

A run holds its stored weights, the state (KV caches) of every sample of the batch, and the peak live
activations of the samples one pass runs: a batch run as groups keeps every sample's cache but only
one group's activations. Generation holds the largest cache it ever reaches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from simulator.spec.hardware import Hardware
from workloads.errors import InputError


@dataclass(frozen=True, slots=True)
class Footprint:
    """DRAM a pass needs at once (bytes)."""

    weight_bytes: int
    state_bytes: int
    peak_activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.state_bytes + self.peak_activation_bytes

    def for_passes(self, passes: int) -> Footprint:
        """The footprint of ``passes`` passes of this one's samples run in turn: every pass's state stays."""
        return replace(self, state_bytes=self.state_bytes * passes)

    def fits(self, hardware: Hardware) -> bool:
        capacity = hardware.memory.dram_capacity_bytes
        return capacity is None or self.total_bytes <= capacity


def check_fits(footprint: Footprint, hardware: Hardware, model: str, chips: int = 1) -> None:
    """Refuse a run whose footprint (one chip's, of ``chips``) exceeds the chip's DRAM, with its parts."""
    if not footprint.fits(hardware):
        whose = f" on each of {chips} chips" if chips > 1 else ""
        raise InputError(
            f"{model}: weights, state and peak activations take {footprint.total_bytes:,} bytes{whose} "
            f"({footprint.weight_bytes:,} + {footprint.state_bytes:,} + {footprint.peak_activation_bytes:,}), "
            f"more than hardware {hardware.name}'s DRAM of {hardware.memory.dram_capacity_bytes:,} bytes")
