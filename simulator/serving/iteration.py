"""The cost of one serving iteration, from the engine (pure: no I/O).

An iteration is a :class:`~workloads.mixed.MixedBatch` run as one pass: its time is the pass's run
cycles (``results.run_cycles`` of its steps' busy cycles, DRAM bytes and launches), its energy the steps'
dynamic energy plus the chip's leakage over that time. A batch that is a ``generate`` workload (one
prefill, one decode step) runs as ``generate`` runs it, sample groups and all. :meth:`IterationCoster.direct`
runs the whole model's pass; :meth:`IterationCoster.cost` must equal it, and gets there faster:

1. Where the model's blocks are all alike, as the sum of its parts (:mod:`.parts`): the token part of its
   (T, E, one kind or several) and each kind's attention, each costed once, when the parts certify that
   the pass spills nothing. A part not seen yet comes from a probe: the token part from the body of a pass
   with the same T and attention ending and the head of (T, E) probed alone
   (:meth:`ModelSpec.head_trace`), else from the probe of the cheapest batch with the same token part (one
   prompt and E - 1 decode steps); kinds from a probe of the first block's attention alone
   (:meth:`ModelSpec.attention_trace`: once nothing spills, a kind's steps cost the same wherever its pass
   starts) on the kinds missing, with the next decode steps of each.
2. Else on a copy of the model with three blocks (the probe): the embedding, the first and the last
   block, the final norm and the head cost as in the whole model, every block between as the second.
   That holds when the second block is placed and costed exactly as the first (compared tensor by tensor
   and step by step): each block's placement depends only on what the block before it leaves live, so
   every later block but the last repeats the first, and the last sees what it sees in the whole model.
   When the first block differs (what the embedding leaves live is not what a block leaves), a copy with
   four blocks, its second and third compared: every block between the first and the last repeats the
   second.
3. Else (blocks that differ: built differently, or given their own precision by ``precision.layers``; a
   probe that does not repeat; a sample-grouped batch that spills) the whole model's pass.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from operator import itemgetter
from typing import Any, NamedTuple, cast

from simulator.energy.accounting import leakage_mw
from simulator.engine import Prepared, Simulator
from simulator.engine.records import RESULT_COLUMNS, StepRecord
from simulator.engine.results import run_cycles
from simulator.serving import parts
from simulator.serving.decode_span import SPAN_TOKENS, DecodeSpan, open_span
from simulator.serving.parts import HeadPart, KindPart, Sums, TokenPart, certified, harvest, record_sums, total
from simulator.serving.prefetch import Prefetch
from workloads.errors import InputError
from workloads.mixed import MixedBatch, Sequence
from workloads.models import ModelSpec

PROBES = (3, 4)  # blocks of the probes tried in turn: n - 3 and n - 2 compared, then the last
_BLOCK = re.compile(r"^layers\.(\d+)\.")
# a record's values but its names: what two blocks' steps must share
_COSTS = itemgetter(*(i for i, name in enumerate(RESULT_COLUMNS) if name not in ("name", "layer", "fused_into")))
# a part's key: the pass it is part of ("mixed", or a uniform "decode" step), then what it depends on
TokenKey = tuple[str, int, int, bool]  # new tokens, emitting sequences, one kind
KindKey = tuple[str, Sequence, int, str]  # a kind, its count, its place: "only" or among "several"


class IterationCost(NamedTuple):
    """One iteration: its time (cycles of the chip's clock, and seconds), DRAM bytes (a chip's) and energy
    (pJ, every chip's; NaN without an energy model)."""

    cycles: int
    seconds: float
    dram_bytes: int
    energy_pj: float


class IterationCoster:
    """Costs of serving iterations of ``spec`` on ``simulator``'s chip and policy."""

    def __init__(self, spec: ModelSpec, simulator: Simulator) -> None:
        self.spec, self.sim = spec, simulator
        self.chips = spec.tp or 1  # every chip of a tensor-parallel split runs the same pass
        self.static_mw = leakage_mw(simulator.costs) * self.chips  # all chips' (NaN without an energy model)
        self.hardware = simulator.hardware
        self.layers = int(spec.config["num_hidden_layers"])
        # blocks run alike when the model builds them alike and no precision is set per block
        alike = (self.layers > max(PROBES) and spec.family.blocks_alike(spec.config)
                 and not simulator.policy.config.precision.layers)
        self.probes = [(blocks, _with_blocks(spec, blocks)) for blocks in PROBES] if alike else []
        self.context = int(spec.config.get("max_position_embeddings") or 1 << 31)
        self.memo: dict[Any, IterationCost] = {}
        self.tokens: dict[TokenKey, TokenPart] = {}
        self.bodies: dict[tuple[int, bool], TokenPart] = {}  # a mixed pass's token part bar its head: (T, one kind)
        self.heads: dict[tuple[int, int], HeadPart] = {}  # its head, by (T, E)
        self.heads_alone = True  # whether heads can be probed alone (the policy may refuse the head's pass)
        self.kinds: dict[KindKey, KindPart] = {}
        self.spans: dict[tuple[str, bool, int, int, float | None], list[DecodeSpan]] = {}  # one-token kinds'
        self.counts = dict.fromkeys(("summed", "probed", "whole"), 0)  # iterations costed each way
        self.prefetch: Prefetch | None = None  # prefills costed ahead in a second process (:mod:`.prefetch`)

    def cost(self, batch: MixedBatch) -> IterationCost:
        """``batch``'s cost. One costed by a probe or whole is kept per composition (its kinds of sequence and
        their counts: the order does not matter); one summed from its parts is summed again when it recurs,
        as its parts are kept (keeping every composition would grow with the run: most are seen once)."""
        key = batch.key
        cost = self.memo.get(key)
        if cost is not None:
            return cost
        layout = _layout(batch) if self.probes else None
        summed = self._summed(batch, *layout) if layout is not None else None
        if summed is not None:
            self.counts["summed"] += 1
            return self._cost(summed)
        cost = self.memo[key] = self._cost(self._probed_or_whole(batch, layout))
        return cost

    def direct(self, batch: MixedBatch) -> IterationCost:
        """The whole model's pass, never probed or memoised (what :meth:`cost` must equal)."""
        return self._cost(self._whole(batch))

    def _cost(self, sums: Sums) -> IterationCost:
        cycles = run_cycles(sums.array, sums.sfu, sums.dram_bytes, self.hardware, sums.launch_cycles, sums.link,
                            self.sim.overlap_links)
        seconds = cycles / (self.hardware.array.clock_mhz * 1e6)
        return IterationCost(cycles, seconds, sums.dram_bytes,
                             self.chips * sums.energy_pj + self.static_mw * seconds * 1e9)

    def _probed_or_whole(self, batch: MixedBatch, layout: tuple[TokenKey, list[KindKey]] | None) -> Sums:
        fetched = self.prefetch.take(batch) if self.prefetch is not None and layout is None else None
        if fetched is not None:
            way, sums, notes = fetched
            self.sim.notes.extend(note for note in notes if note not in self.sim.notes)
        else:
            way, sums = self.costed_alone(batch, layout)
        self.counts[way] += 1
        return sums

    def costed_alone(self, batch: MixedBatch, layout: tuple[TokenKey, list[KindKey]] | None) -> tuple[str, Sums]:
        """The batch's sums from a probe, else from the whole model's pass, and which it was."""
        probed = self._probed(batch, layout) if self.probes else None
        if probed is not None:
            return "probed", probed
        return "whole", self._whole(batch)

    def _whole(self, batch: MixedBatch) -> Sums:
        """The whole model's pass, as ``generate`` runs it (sample groups and all)."""
        records = self.sim.run_records(self.spec.mixed_trace(batch))[0]
        return record_sums(records, [1] * len(records))

    def _summed(self, batch: MixedBatch, token_key: TokenKey, kinds: list[KindKey]) -> Sums | None:
        """The batch as the sum of its parts, probing the parts not seen yet; None when a probe spills or
        the parts do not certify a pass without spills."""
        token = self.tokens.get(token_key)
        if token is None and token_key[0] == "mixed":
            token = self._joined(token_key)
        if token is None and len(kinds) > 1 and token_key[0] == "mixed" and batch.tokens < self.context:
            stand_in = _token_stand_in(batch)
            self._probed(stand_in, _layout(stand_in))
            token = self.tokens.get(token_key)
        if token is None:
            return None  # the probe of this batch harvests its parts
        found = list(map(self.kinds.get, kinds))
        if None in found:
            missing = [key for key, part in zip(kinds, found, strict=True) if part is None]
            if not self._probe_kinds(batch, missing):
                return None
            found = list(map(self.kinds.get, kinds))
        parts = cast(list[KindPart], found)  # every kind costed now
        if not certified(token, parts, self.hardware.memory.ifmap_buffer_bytes):
            return None
        return total([token.sums, *(part.sums for part in parts)])

    def _joined(self, key: TokenKey) -> TokenPart | None:
        """A mixed pass's token part from the body of a pass with the same T and attention ending, and the head
        of (T, E), probed alone when not seen yet; None when no such body is known or the head cannot be
        probed alone."""
        _, tokens, emitting, one = key
        body = self.bodies.get((tokens, one))
        if body is None:
            return None
        head = self.heads.get((tokens, emitting)) or self._probe_head(tokens, emitting)
        if head is None:
            return None
        token = self.tokens[key] = parts.joined(body, head)
        return token

    def _probe_head(self, tokens: int, emitting: int) -> HeadPart | None:
        """The head of (T, E) from a pass of it alone (:meth:`ModelSpec.head_trace`); None when that pass
        spills, or when the model or the policy refuses a head alone (a tied head; a setting such as a KV
        cache format, which the policy refuses on a pass without one): then never again."""
        if not self.heads_alone:
            return None
        try:
            prepared = self.sim.prepare(self.spec.head_trace(tokens, emitting))
        except InputError:
            self.heads_alone = False
            return None
        if prepared.spilled:
            return None
        head = self.heads[(tokens, emitting)] = parts.head_alone(prepared, self.sim.records(prepared))
        return head

    def _probe_kinds(self, batch: MixedBatch, missing: list[KindKey]) -> bool:
        """Cost the ``missing`` kinds: one-token kinds (decode steps) from spans of cache lengths
        (:meth:`_spanned`), the others on the first block's attention alone; False when a probe spills."""
        uniform = batch.uniform()
        if (uniform is not None and uniform.phase == "decode") or missing[0][3] == "several":
            spanned = [key for key in missing if key[1].new == 1]
            if not all(self._spanned(key, batch.expert_imbalance) for key in spanned):
                return False
            missing = [key for key in missing if key[1].new > 1]
            if not missing:
                return True
        probe, keys = (batch, missing) if missing[0][3] == "only" else self._among_several(batch, missing)
        prepared = self.sim.prepare(self.spec.attention_trace(probe, as_mixed=uniform is None))
        if prepared.spilled:
            return False
        kinds = parts.kind_parts(prepared, functools.partial(self.sim.step_record, prepared), self._times(prepared))
        for index, key in enumerate(keys):
            self.kinds.setdefault(key, kinds[index])
        return True

    def _among_several(self, batch: MixedBatch, missing: list[KindKey]) -> tuple[MixedBatch, list[KindKey]]:
        """A probe of ``missing`` kinds among several (a lone one beside a filler), and its kinds' keys."""
        wanted = {key[1]: key[2] for key in missing}
        if len(wanted) == 1:
            wanted[_beside(missing[0][1])] = 1
        probe = MixedBatch(tuple(kind for kind, count in wanted.items() for _ in range(count)), batch.expert_imbalance)
        return probe, _places(probe)

    def _spanned(self, key: KindKey, imbalance: float | None) -> bool:
        """Cost a one-token kind (``key``: a uniform decode step's B sequences, or B sequences among several)
        from a span of cache lengths (:mod:`.decode_span`), opening one at its length when none covers it,
        else from a probe of its length alone; False when that spills."""
        phase, kind, count, _ = key
        low = kind.cached

        def probe(length: int) -> MixedBatch:
            sequences = (Sequence(1, length, kind.emits),) * count
            if phase == "mixed":
                sequences = (_beside(kind), *sequences)
            return MixedBatch(sequences, imbalance)

        @functools.cache
        def attention(length: int) -> Prepared:
            return self.sim.prepare(self.spec.attention_trace(probe(length), as_mixed=phase == "mixed"))

        index = [place[1] for place in _places(probe(low))].index(kind) if phase == "mixed" else 0
        spans = self.spans.setdefault((phase, kind.emits, count, index, imbalance), [])
        span = next((span for span in spans if span.covers(low)), None)
        if span is None:
            span = open_span(attention, index, low, min(low + SPAN_TOKENS, self.context - 1), self.sim, self._times)
            if span is None:
                alone = attention(low)
                if alone.spilled:
                    return False
                self.kinds[key] = parts.kind_parts(alone, functools.partial(self.sim.step_record, alone),
                                                   self._times(alone))[index]
                return True
            spans.append(span)
        self.kinds[key] = span.part(low, self.sim)
        return True

    def _times(self, attention: Prepared) -> list[int]:
        """How often each step of a probe of the first block's attention runs in the whole pass."""
        return [self.layers if step.op.layer == 0 else 1 for step in attention.lowered.steps]

    def _probed(self, batch: MixedBatch, layout: tuple[TokenKey, list[KindKey]] | None) -> Sums | None:
        """The whole model's sums from a copy with fewer blocks, or None when no copy shows them; the parts
        of a batch with a ``layout`` are kept when its pass spills nothing."""
        for blocks, probe in self.probes:
            prepared = self.sim.prepare(probe.mixed_trace(batch))
            if prepared.spilled and batch.uniform() is not None and len(batch.sequences) > 1:
                return None  # the engine may run the batch in sample groups: decided on the whole model
            records = self.sim.records(prepared)
            repeated = blocks - 2  # compared with the block before it; it stands for every block between
            if not _repeats(prepared, records, repeated - 1, repeated):
                continue
            times = [self.layers - blocks + 1 if r.layer == repeated else 1 for r in records]
            if layout is not None and not prepared.spilled:
                harvested = harvest(prepared, records, times)
                self.tokens.setdefault(layout[0], harvested.token)
                if layout[0][0] == "mixed":
                    _, tokens, emitting, one = layout[0]
                    self.bodies.setdefault((tokens, one), harvested.body)
                    self.heads.setdefault((tokens, emitting), harvested.head)
                for index, key in enumerate(layout[1]):
                    self.kinds.setdefault(key, harvested.kinds[index])
            return record_sums(records, times)
        return None


def _layout(batch: MixedBatch) -> tuple[TokenKey, list[KindKey]] | None:
    """What a batch's parts are (:mod:`.parts`): its token part's key and its kinds' keys, in the order its
    pass runs them; None for a prefill of one prompt length (one kind: nothing to share)."""
    uniform = batch.uniform()
    if uniform is None:
        kinds = _places(batch)
        return ("mixed", batch.tokens, batch.emitting, len(kinds) == 1), kinds
    if uniform.phase == "decode":  # generate's decode step: B sequences against one cache length
        kind = batch.sequences[0]
        return ("decode", uniform.batch, 0, False), [("decode", kind, uniform.batch, "only")]
    return None


def _token_stand_in(batch: MixedBatch) -> MixedBatch:
    """The cheapest batch with ``batch``'s token part (the same new tokens and emitting sequences, several
    kinds): one prompt and E - 1 one-token steps (emitting), or, when none emits, two non-emitting
    sequences."""
    tokens, emitting = batch.tokens, batch.emitting
    if emitting:
        return MixedBatch((Sequence(tokens - emitting + 1, 0, True),) + (Sequence(1, 1, True),) * (emitting - 1)
                          if emitting > 1 else (Sequence(tokens - 1, 0, True), Sequence(1, 1, False)),
                          batch.expert_imbalance)
    return MixedBatch((Sequence(tokens - 1, 0, False), Sequence(1, 1, False)), batch.expert_imbalance)


def _beside(kind: Sequence) -> Sequence:
    """The filler a lone kind is probed beside to be among several: a one-token step that is not the kind at
    any cache length."""
    return Sequence(1, 1, not kind.emits)


def _places(batch: MixedBatch) -> list[KindKey]:
    """A mixed batch's kinds in the order its pass runs them, each with its count and place."""
    kinds = batch.key
    if len(kinds) == 1:
        return [("mixed", kinds[0][0], kinds[0][1], "only")]
    return [("mixed", kind, count, "several") for kind, count in kinds]


def _with_blocks(spec: ModelSpec, blocks: int) -> ModelSpec:
    cfg = dict(spec.config)
    cfg["num_hidden_layers"] = blocks
    return replace(spec, config=cfg)


def _repeats(prepared: Prepared, records: list[StepRecord], first: int, second: int) -> bool:
    """Whether blocks ``first`` and ``second`` of a probe are placed and costed alike: the same steps with the
    same records (names aside) and every tensor with the same home."""
    def alike(nan_free: bool) -> bool:
        blocks: dict[int, list[tuple[Any, ...]]] = {first: [], second: []}
        for record in records:
            if record.layer in blocks:
                values = _COSTS(record.row())
                if nan_free:  # NaN (no energy model) is not equal to itself
                    values = tuple(None if value != value else value for value in values)
                blocks[record.layer].append((_unnamed(record.name), _unnamed(record.fused_into), values))
        return blocks[first] == blocks[second]

    homes: dict[int, dict[str, tuple[str, bool]]] = {first: {}, second: {}}
    written = prepared.placement.written
    for name, home in prepared.placement.home.items():
        match = _BLOCK.match(name)
        if match and int(match.group(1)) in homes:
            homes[int(match.group(1))][_unnamed(name)] = (home, name in written)
    return homes[first] == homes[second] and (alike(False) or alike(True))


def _unnamed(name: str) -> str:
    return _BLOCK.sub("layers.*.", name)
