"""A system of chips: a chip preset, how many of them, and the links between them (pydantic; unknown keys
are rejected).

A system preset is a YAML file under ``configs/systems/``; ``--hardware NAME`` accepts it wherever it
accepts a chip preset (:func:`load_target`). Every chip is the same preset. Links: ``link_gb_per_s`` is one
direction of one link (1e9 bytes/s), ``link_latency_us`` what each step of a collective waits beyond its
bytes (hop, synchronisation), ``link_pj_per_bit`` the energy of a bit sent over one link. Topologies:

- ``ring``: each chip has two links, one to each neighbour (``links_per_chip: 2``);
- ``torus_2d`` with its ``shape`` [a, b] (a x b = chips): four links, two along each dimension, which wraps;
- ``switch``: each chip has ``links_per_chip`` links to one switch, which reaches every other chip.

How collectives use them is :mod:`simulator.engine.collectives`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from simulator.spec.config_io import SizePair, StrictModel, read_yaml_mapping, validate
from simulator.spec.hardware import Hardware, load_hardware, preset_names
from simulator.spec.shipped import CONFIG_DIR
from workloads.errors import InputError
from workloads.models import Workload

SYSTEMS_DIR = CONFIG_DIR / "systems"
LINKS_OF_TOPOLOGY = {"ring": 2, "torus_2d": 4}
MAX_CHIPS = 65536  # chips of a system, and any degree of its parallel plan


class Interconnect(StrictModel):
    topology: Literal["ring", "torus_2d", "switch"]
    shape: SizePair | None = Field(None, description="torus_2d: chips along each dimension, [a, b]")
    links_per_chip: int = Field(gt=0, le=64, description="ring 2, torus_2d 4, switch: links to the switch")
    link_gb_per_s: float = Field(gt=0, allow_inf_nan=False, description="one direction of one link, GB/s (1e9 B/s)")
    link_latency_us: float = Field(ge=0, allow_inf_nan=False,
                                   description="time each step of a collective waits beyond its bytes, us")
    link_pj_per_bit: float = Field(ge=0, allow_inf_nan=False, description="energy of one bit over one link, pJ")

    @property
    def link_bytes_per_s(self) -> float:
        return self.link_gb_per_s * 1e9

    @property
    def latency_s(self) -> float:
        return self.link_latency_us * 1e-6


class System(StrictModel):
    name: str
    description: str = ""
    chip: str = Field(description="the chip preset every chip of the system is (configs/hardware/)")
    chips: int = Field(ge=2, le=MAX_CHIPS)
    interconnect: Interconnect
    overlap_collectives: bool = Field(
        False, description="collectives run beside the chip's own work (an ideal bound: a pass takes the longer of "
                           "its work and its collectives), else after the products they join (the default)")

    @model_validator(mode="after")
    def _check_topology(self) -> System:
        links = self.interconnect
        if links.topology == "torus_2d":
            if links.shape is None or min(links.shape) < 1 or links.shape[0] * links.shape[1] != self.chips:
                raise ValueError(f"interconnect.shape {links.shape} does not make {self.chips} chips (a x b)")
        elif links.shape is not None:
            raise ValueError(f"interconnect.shape applies to torus_2d, not to {links.topology}")
        expected = LINKS_OF_TOPOLOGY.get(links.topology)
        if expected is not None and links.links_per_chip != expected:
            raise ValueError(f"a {links.topology} gives each chip {expected} links, not {links.links_per_chip}")
        return self


class ParallelPlan(StrictModel):
    """How a run splits over a system's chips (docs/systems.md): ``tp`` x ``ep`` chips per pipeline stage,
    ``pp`` stages, the batch run through them as ``microbatches``."""

    tp: int = Field(1, ge=1, le=MAX_CHIPS, description="tensor-parallel degree")
    ep: int = Field(1, ge=1, le=MAX_CHIPS, description="expert-parallel degree")
    pp: int = Field(1, ge=1, le=MAX_CHIPS, description="pipeline stages")
    microbatches: int = Field(1, ge=1, le=MAX_CHIPS, description="microbatches through the pipeline")

    @property
    def chips(self) -> int:
        return self.tp * self.ep * self.pp

    def split(self, workload: Workload) -> Workload:
        """``workload`` split as this plan says (its knobs unset where a degree is 1)."""
        return replace(workload, tp=self.tp if self.tp > 1 else None, ep=self.ep if self.ep > 1 else None,
                       pp=self.pp if self.pp > 1 else None)

    def with_given(self, **given: int | None) -> ParallelPlan:
        """This plan with the degrees ``given`` (None: not given) in place of its own."""
        changes = {name: value for name, value in given.items() if value is not None}
        return self.model_validate({**self.model_dump(), **changes}) if changes else self


def system_with_chips(system: System, chips: int) -> System:
    """``system`` with ``chips`` chips; a torus takes the squarest a x b shape (a <= b), as TPU slices do."""
    data = system.model_dump()
    data["chips"] = chips
    if system.interconnect.topology == "torus_2d" and 0 < chips <= MAX_CHIPS:
        short = max(a for a in range(1, int(chips**0.5) + 1) if chips % a == 0)
        data["interconnect"]["shape"] = (short, chips // short)
    return validate(System, data, f"{system.name} with {chips} chips")


@dataclass(frozen=True)
class Target:
    """What a run runs on: one chip, or a system of them (``system``), each chip ``hardware``."""

    hardware: Hardware
    system: System | None = None

    @property
    def name(self) -> str:
        return self.system.name if self.system is not None else self.hardware.name

    @property
    def chips(self) -> int:
        return self.system.chips if self.system is not None else 1


def check_plan(system: System | None, chip: str, tp: int, ep: int = 1, pp: int = 1) -> None:
    """A parallel plan (tensor-parallel degree ``tp``, expert-parallel ``ep``, ``pp`` pipeline stages) the
    target can run: one chip without a system, else every chip of the system, each stage's chips one group
    its topology holds as whole rings."""
    chips = tp * ep * pp
    plan = " ".join(f"--{name} {degree}" for name, degree in (("tp", tp), ("ep", ep), ("pp", pp)) if degree > 1)
    if system is None:
        if chips > 1:
            raise InputError(f"{plan} splits the model over {chips} chips; hardware {chip} is one chip (systems: "
                             f"{', '.join(system_names())})")
        return
    if chips != system.chips:
        raise InputError(f"{plan or '--tp 1'} uses {chips} of {system.name}'s {system.chips} chips: the parallel "
                         f"plan must use every chip (tp x ep x pp = {system.chips})")
    if tp * ep > 1:
        from simulator.engine.collectives import group_rings

        group_rings(system.interconnect, tp * ep)


def system_names() -> list[str]:
    return sorted(p.stem for p in SYSTEMS_DIR.glob("*.yaml"))


def load_system(path: Path) -> System:
    return validate(System, read_yaml_mapping(path), str(path))


def load_target(name_or_path: str | Path) -> Target:
    """A chip preset or a system preset by name (configs/hardware/, configs/systems/), or a YAML path to
    either (a file with a ``chips`` key is a system)."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or path.exists():
        if path.is_file() and "chips" in read_yaml_mapping(path):
            system = load_system(path)
            return Target(load_hardware(system.chip), system)
        return Target(load_hardware(path))
    if (SYSTEMS_DIR / f"{text}.yaml").is_file():
        system = load_system(SYSTEMS_DIR / f"{text}.yaml")
        return Target(load_hardware(system.chip), system)
    if text not in preset_names():
        import difflib

        known = preset_names() + system_names()
        close = difflib.get_close_matches(text, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; presets: {', '.join(known)}"
        raise InputError(f"unknown hardware preset {text!r}{hint}")
    return Target(load_hardware(text))
