"""A paged KV cache: fixed-size blocks of token entries, allocated to sequences as they grow (pure).

Every sequence holds ceil(kept / block_tokens) blocks, where ``kept`` is the tokens its cache keeps (all of
them, or the last W - 1 under a sliding window of W). The cache has ``capacity`` blocks: what the chip's
DRAM has left after the weights and an iteration's activations, over the bytes of one block (the model's
per-token cache entries, of every layer, at their stored format and scales, times ``block_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workloads.errors import InputError


@dataclass
class PagedKVCache:
    capacity: int  # blocks
    block_tokens: int
    window: int | None = None  # a sliding window: the cache keeps the last window - 1 tokens
    used: int = 0
    held: dict[int, int] = field(default_factory=dict)  # sequence -> blocks it holds
    peak: int = 0

    def __post_init__(self) -> None:
        if self.block_tokens < 1:
            raise InputError(f"--kv-block-size must be a positive number of tokens, got {self.block_tokens}")
        if self.capacity < 1:
            raise InputError("the KV cache has no room for one block: the weights and activations fill the DRAM")

    def blocks_for(self, tokens: int, samples: int = 1, prompt: int = 0) -> int:
        """Blocks a sequence of ``tokens`` cached tokens holds; ``samples`` of them sampled from one
        ``prompt`` share its whole blocks and hold the rest apart (the last, partial prompt block is copied
        when a sample first writes to it). A sliding window keeps nothing to share."""
        kept = tokens if self.window is None else min(tokens, self.window - 1)
        own = -(-kept // self.block_tokens)
        shared = prompt // self.block_tokens if self.window is None else 0
        return shared + samples * (own - shared)

    @property
    def free(self) -> int:
        return self.capacity - self.used

    def can_grow(self, sequence: int, tokens: int, samples: int = 1, prompt: int = 0) -> bool:
        return self.blocks_for(tokens, samples, prompt) - self.held.get(sequence, 0) <= self.free

    def try_grow(self, sequence: int, tokens: int, samples: int = 1, prompt: int = 0) -> bool:
        """Hold the blocks for ``tokens`` cached tokens of ``sequence`` (of its ``samples``, see
        :meth:`blocks_for`) when they fit; False, and nothing held, when they do not."""
        more = self.blocks_for(tokens, samples, prompt) - self.held.get(sequence, 0)
        if more > self.free:
            return False
        if more > 0:
            self.held[sequence] = self.held.get(sequence, 0) + more
            self.used += more
            self.peak = max(self.peak, self.used)
        return True

    def grow(self, sequence: int, tokens: int, samples: int = 1, prompt: int = 0) -> None:
        """:meth:`try_grow`, for callers that checked :meth:`can_grow` (an error when they do not fit)."""
        if not self.try_grow(sequence, tokens, samples, prompt):
            raise AssertionError(f"sequence {sequence} needs more blocks than the {self.free} free")

    def release(self, sequence: int) -> None:
        self.used -= self.held.pop(sequence, 0)
