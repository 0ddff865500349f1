"""A mixed batch: the sequences one serving iteration runs, each with its own new and cached tokens.

A serving engine's iteration batches prompts (or chunks of them) and decode steps of requests at different
points of their generation. Every sequence brings ``new`` tokens and attends to the ``cached`` tokens its
KV cache already holds plus its own new ones; its keys and values are appended to its cache. The token-wise
work (embedding, norms, projections, feed-forward) runs once over all new tokens together; each sequence's
attention is its own (see :func:`workloads.blocks.mixed_attention`).

A batch of one kind of sequence is the workload ``generate`` runs: all prompts fresh (``cached`` 0) and
each emitting its first token is a prefill; all one-token steps emitting a token is a decode step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import NamedTuple

from workloads.errors import InputError
from workloads.families.base import Workload


class _Fields(NamedTuple):
    new: int
    cached: int
    emits: bool


class Sequence(_Fields):
    """One sequence of an iteration: ``new`` tokens run against a KV cache of ``cached`` tokens; ``emits``
    when its last new token is followed by the LM head (a decode step, or a prompt's last chunk). A named
    tuple: serving hashes, compares and sorts millions of them."""

    __slots__ = ()

    def __new__(cls, new: int, cached: int, emits: bool) -> Sequence:
        if new < 1 or cached < 0:
            raise InputError(f"a sequence runs at least one new token against a cache of zero or more: "
                             f"Sequence(new={new}, cached={cached}, emits={emits})")
        return super().__new__(cls, new, cached, emits)


_NEW, _EMITS = itemgetter(0), itemgetter(2)  # a Sequence's fields, read in C


@dataclass(frozen=True)
class MixedBatch:
    """The sequences of one iteration, in the order they are batched."""

    sequences: tuple[Sequence, ...]
    expert_imbalance: float | None = None
    # The batch as counts of each kind of sequence, sorted (its cost does not depend on the order). Made with
    # the batch: serving looks up every iteration's cost by it.
    key: tuple[tuple[Sequence, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.sequences:
            raise InputError("an iteration runs at least one sequence")
        counts: dict[Sequence, int] = {}
        for sequence in sorted(self.sequences):
            counts[sequence] = counts.get(sequence, 0) + 1
        object.__setattr__(self, "key", tuple(counts.items()))

    @property
    def tokens(self) -> int:
        """New tokens over all sequences: the rows of the token-wise products."""
        return sum(map(_NEW, self.sequences))

    @property
    def emitting(self) -> int:
        """Sequences that emit a token this iteration: the rows of the LM head."""
        return sum(map(_EMITS, self.sequences))

    def uniform(self) -> Workload | None:
        """The ``generate`` workload this batch is, when it is one: fresh prompts of one length each
        emitting (a prefill), or one-token steps against one cache length each emitting (a decode step)."""
        if len(self.key) > 1 or not self.key[0][0].emits:
            return None
        first, count = self.key[0]
        workload = Workload(batch=count, tokens=first.new, expert_imbalance=self.expert_imbalance)
        if first.cached == 0:
            return replace(workload, phase="prefill", logits_to_keep=1)
        if first.new == 1:
            return replace(workload, tokens=first.cached, phase="decode")
        return None
