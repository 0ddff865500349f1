"""How chips split one decoder's weights and work, and what each chip holds.

Tensor parallelism (``tp`` chips; Megatron-LM's scheme, as vLLM serves it):

- Column-parallel products split their output features: q, k and v by heads, the feed-forward's gate/up
  (ffn1) by its inner width, the LM head by vocabulary entries. Row-parallel products split their input
  features the same way: the attention output and the feed-forward's down projection (ffn2); each chip then
  holds a partial sum of the whole output, and an all-reduce over the tp chips adds them (two per block).
- Key/value heads: kv_heads / tp per chip when tp divides them; with fewer key/value heads than chips
  (grouped-query attention, kv_heads < tp) each key/value head is replicated on tp / kv_heads chips, so each
  chip holds one, as vLLM does.
- The vocabulary is split in tp contiguous ranges of ceil(vocab / tp) entries (the last padded, as
  Megatron and vLLM pad the vocabulary): the embedding looks up the entries in its range, and an all-reduce
  assembles the embedded tokens; the LM head computes its range's logits, and an all-gather assembles them.
- Everything else is replicated on every chip: norms (and their weights), residual adds, the rotary table,
  a mixture of experts' router, and the biases of row-parallel products (added once after the reduction on
  one chip in Megatron; here stored and added on each: a few elements per token).

A mixture of experts runs tensor-parallel inside every expert (each expert's inner width split, as vLLM
does without expert parallelism).

Pipeline parallelism (``pp`` stages): stage s of pp holds layers [s L / pp, (s + 1) L / pp); the first stage
also the embedding, the last the final norm and the LM head (and its own copy of a tied embedding table, as
Megatron keeps one). A stage ends by sending its hidden states to the next stage's chips (one ``send``,
written to DRAM there: counted on the sender); the next stage reads them from DRAM. Each stage's chips split
it as the tensor-parallel degree says. How microbatches flow through the stages is the generation's
(simulator/analysis/pipeline.py).

Expert parallelism (``ep`` chips; GShard's scheme): each chip holds E / ep whole experts and a copy of
everything else, and takes batch / ep of the sequences through everything else (data-parallel attention).
Before the experts an all-to-all dispatches each routed token (a copy per expert it picked) to the chip
holding that expert; after them a second all-to-all returns the results to the token's chip. Each chip's
experts compute the token-expert pairs that reach them: under uniform routing 1 / ep of all of them, the
same expected experts touched and loads as on one chip, for the tokens of all chips, split evenly.
"""

from __future__ import annotations

from dataclasses import dataclass

from workloads.errors import InputError
from workloads.ops import MAX_SIZE


@dataclass(frozen=True)
class _Degree:
    """``degree`` chips sharing one kind of split (its command-line ``flag``); 1 is one chip."""

    degree: int = 1
    flag = ""

    def __post_init__(self) -> None:
        if isinstance(self.degree, bool) or not isinstance(self.degree, int) or not 1 <= self.degree <= MAX_SIZE:
            raise InputError(f"{self.flag} must be a positive integer, got {self.degree!r}")

    @property
    def split(self) -> bool:
        return self.degree > 1


@dataclass(frozen=True)
class TensorParallel(_Degree):
    """``degree`` chips splitting one model's products (no split, no collective, at 1)."""

    flag = "--tp"

    def columns(self, count: int, what: str) -> int:
        """Each chip's share of ``count`` heads or features, which the degree must divide."""
        if count % self.degree:
            raise InputError(f"--tp {self.degree} does not divide {what} = {count}")
        return count // self.degree

    def kv_heads(self, kv_heads: int) -> int:
        """Key/value heads each chip holds: its share, or one (replicated) when there are fewer than chips."""
        if kv_heads % self.degree == 0:
            return kv_heads // self.degree
        if self.degree % kv_heads == 0:
            return 1
        raise InputError(f"--tp {self.degree} neither divides nor is a multiple of num_key_value_heads = {kv_heads}")

    def vocabulary(self, vocab: int) -> int:
        """Vocabulary entries each chip holds (the last range padded)."""
        return -(-vocab // self.degree)


@dataclass(frozen=True)
class ExpertParallel(_Degree):
    """``degree`` chips each holding 1 / degree of the experts."""

    flag = "--ep"

    def experts(self, experts: int) -> int:
        if experts % self.degree:
            raise InputError(f"--ep {self.degree} does not divide num_local_experts = {experts}")
        return experts // self.degree

    def sequences(self, batch: int) -> int:
        """Each chip's share of the batch (attention runs data-parallel)."""
        if batch % self.degree:
            raise InputError(f"--ep {self.degree} gives each chip batch / {self.degree} of the sequences; batch "
                             f"{batch} is not a multiple of {self.degree}")
        return batch // self.degree


@dataclass(frozen=True)
class PipelineStage:
    """Stage ``index`` of ``stages``; one stage is the whole model."""

    stages: int = 1
    index: int = 0

    def __post_init__(self) -> None:
        for name, value in (("--pp", self.stages), ("stage", self.index + 1)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.index >= self.stages:
            raise InputError(f"stage {self.index} does not exist in a pipeline of {self.stages} stages")

    @property
    def first(self) -> bool:
        return self.index == 0

    @property
    def last(self) -> bool:
        return self.index == self.stages - 1

    def layers(self, layers: int) -> range:
        """The blocks this stage holds, which the stages must divide evenly."""
        if layers % self.stages:
            raise InputError(f"--pp {self.stages} does not divide num_hidden_layers = {layers}")
        share = layers // self.stages
        return range(self.index * share, (self.index + 1) * share)
