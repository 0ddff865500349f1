"""Binding a run config to a hardware (pure): which sparsity the PEs skip and how the weights are stored.

A run config asks for formats and sparsity; a chip may not do what it asks. ``bind`` decides, once, for
the engine, ``footprint``, ``run``'s memory table and sweeps alike:

- "native" formats resolve to the chip's vector-unit format;
- an N:M pattern runs at the pattern the PEs skip (``sparse.skip_pattern``), or dense when they skip none;
- unstructured sparsity runs skipped only where ``sparse.unstructured`` is set;
- weights whose sparsity the PEs cannot skip stay compressed only behind a decompressor
  (``sparse.decompressor``); without one they are stored and streamed dense.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from simulator.formats.sparsity import SparsityPattern
from simulator.formats.storage import Footprint, parameter_storage
from simulator.spec.hardware import Hardware, SparseSupport
from simulator.spec.run_config import Policy, SparsityConfig
from workloads.errors import InputError
from workloads.ops import Op, Trace


@dataclass(frozen=True)
class Plan:
    """A policy bound to a hardware, and what the binding decided."""

    policy: Policy  # the run config, its "native" formats resolved on ``hardware``
    hardware: Hardware
    skip_pattern: SparsityPattern | None  # the N:M pattern the PEs skip for the pruned weights, if any
    skips: bool  # the PEs skip the weights' sparsity (True when the weights are dense)
    storage: Policy  # what is stored and streamed: ``policy``, or it without sparsity (kept dense)
    notes: tuple[str, ...]

    @property
    def weights_compressed(self) -> bool:
        """Whether pruned weights are kept (stored and streamed) compressed."""
        return self.storage.config.sparsity.weights is not None

    def footprint(self, trace: Trace, nonzeros: Callable[[Op], int] | None = None) -> Footprint:
        """Parameter storage of ``trace`` as this plan stores and streams it (what the engine reads)."""
        return parameter_storage(trace, self.storage, nonzeros)

    def compressed_pattern(self, op: Op) -> SparsityPattern | None:
        """The N:M pattern ``op``'s weights keep when the PEs skip it (dequantized weights then stay
        compressed on their way to the array); None when they are dense or run dense."""
        return self.policy.pattern if self.skip_pattern is not None and self.policy.prunes(op) else None

    def attention_sparsity(self, bmm: Op) -> tuple[SparsityPattern | None, SparsityPattern | None, str | None]:
        """(pattern, the pattern the PEs run it at, a note) for the attention product ``bmm``: both None
        when it has no pruned operand, or when the PEs skip no pattern it fits (it then computes dense,
        unpruned, and the note says so)."""
        pattern = self.policy.attention_pattern(bmm)
        if pattern is None:
            return None, None, None
        sparse, name = self.hardware.sparse, self.hardware.name
        runs_at = sparse.skip_pattern(pattern)
        if runs_at is None:
            return None, None, (f"hardware {name} cannot {_verb(sparse)} {pattern} attention sparsity "
                                f"(sparse.patterns: {', '.join(sparse.patterns) or 'none'}): the attention products "
                                "compute dense, with nothing selected")
        if runs_at != pattern:
            return pattern, runs_at, _fallback_note(name, sparse, pattern, runs_at, "attention operands")
        return pattern, runs_at, None

    @property
    def masked(self) -> bool:
        """Whether the skipped weights are timed from their masks (unstructured, or N:M through masks)."""
        weights = self.policy.config.sparsity.weights
        return weights is not None and weights.uses_masks and self.skips


def bind(policy: Policy, hardware: Hardware) -> Plan:
    """``policy`` on ``hardware``, with every decision the pair implies and its note."""
    for given, wanted, loader in ((policy, Policy, "load_run_config"), (hardware, Hardware, "load_hardware")):
        if not isinstance(given, wanted):  # a name given where the Python API takes the loaded object
            raise InputError(f"expected a {wanted.__name__} (from {loader}), got {type(given).__name__} {given!r}")
    policy = policy.on(hardware)
    sparse = hardware.sparse
    weights = policy.config.sparsity.weights
    pattern = policy.pattern
    notes: list[str] = []
    skip_pattern = sparse.skip_pattern(pattern) if pattern is not None else None
    if weights is None:
        skips = True
    elif pattern is not None:
        skips = skip_pattern is not None
    else:
        skips = sparse.unstructured
    if skip_pattern is not None and skip_pattern != pattern:
        assert pattern is not None
        notes.append(_fallback_note(hardware.name, sparse, pattern, skip_pattern, "weights"))
    storage = policy
    if not skips:
        kind = str(pattern) if pattern is not None else "unstructured"
        if sparse.decompressor:
            streamed = "its weights stream compressed through the decompressor"
        else:
            streamed = "with no decompressor, its weights are kept and streamed dense"
            storage = replace(policy, config=policy.config.model_copy(update={"sparsity": SparsityConfig()}),
                              _resolved={})
        notes.append(f"hardware {hardware.name} cannot {_verb(sparse)} {kind} sparsity (sparse.patterns: "
                     f"{', '.join(sparse.patterns) or 'none'}; unstructured: {str(sparse.unstructured).lower()}): "
                     f"it computes dense, and {streamed}")
    return Plan(policy, hardware, skip_pattern, skips, storage, tuple(notes))


def footprint(trace: Trace, config: Policy | Plan, nonzeros: Callable[[Op], int] | None = None, *,
              hardware: Hardware | None = None) -> Footprint:
    """Parameter storage of ``trace`` under ``config`` as a chip stores it: a plan as bound, a run config
    on ``hardware``, or on the preset its ``hardware`` key names (read from configs/hardware/)."""
    if isinstance(config, Plan):
        if hardware is not None:
            raise InputError("footprint: a plan is already bound to a hardware; give a run config with hardware=")
        return config.footprint(trace, nonzeros)
    if hardware is None:
        from simulator.spec.hardware import load_hardware

        hardware = load_hardware(config.config.hardware)
    return bind(config, hardware).footprint(trace, nonzeros)


def _verb(sparse: SparseSupport) -> str:
    """What the PEs do with the zeros of a pattern they handle: skip them, or gate them in their slots."""
    return "skip" if sparse.mode == "skip" else "gate"


def _fallback_note(name: str, sparse: SparseSupport, pattern: SparsityPattern, handled: SparsityPattern,
                   what: str) -> str:
    """The note for ``pattern`` handled as the listed ``handled`` one it fits."""
    if sparse.mode == "skip":
        return (f"hardware {name} skips {handled}, not {pattern}: the {pattern} {what} run at the {handled} rate "
                "(MACs counted as issued)")
    return (f"hardware {name} gates {handled}, not {pattern}: the {pattern} {what} take every MAC slot, the zeros "
            "clock-gated (cycles as dense)")
