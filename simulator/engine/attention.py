"""The fused attention kernel: its block rows, the work they do, and the blocks it runs with (pure).

The kernel is described in docs/engine.md ("Attention kernels"). Here: query i of a product's
``queries`` sits at key position keys - queries + i; key blocks start at key 0; a query block computes
whole key blocks, ``masked`` keys of them in blocks its mask cuts. ``verification/tiled_attention.py``
runs the tiled loop block by block and must agree with these counts.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from simulator.engine.timing import product_cycles
from simulator.spec.hardware import Hardware
from simulator.units import ceil_div
from workloads.attention_geometry import AttentionGeometry
from workloads.errors import InputError

BLOCK_CHOICES = (64, 128, 256, 512, 1024, 2048)  # block sizes the search tries (a pinned one may be any)


@dataclass(frozen=True)
class Blocks:
    """The fused kernel's tiling: query positions and keys per block, and key chunks (split-K)."""

    block_q: int
    block_k: int
    splits: int = 1


@dataclass(frozen=True)
class BlockRow:
    """``count`` query blocks of a product that compute alike: ``queries`` query positions against ``keys``
    computed keys, ``masked`` of them in blocks the mask cuts."""

    count: int
    queries: int
    keys: int
    masked: int


@dataclass(frozen=True)
class KernelWork:
    """One fused attention's block rows and the totals every cost reads (elements, whole attention)."""

    geometry: AttentionGeometry
    keys: int  # keys of the attention (the cache length, in decode)
    blocks: Blocks
    rows: tuple[BlockRow, ...]

    def _per_product(self, value: int) -> int:
        return self.geometry.products * value

    @functools.cached_property
    def scores(self) -> int:
        """Scores computed (block-granular): each one a row of Q K^T's MACs and of P V's."""
        return self._per_product(self.geometry.group * sum(r.count * r.queries * r.keys for r in self.rows))

    @functools.cached_property
    def masked_scores(self) -> int:
        """Scores in blocks the mask cuts, where the mask is applied."""
        return self._per_product(self.geometry.group * sum(r.count * r.queries * r.masked for r in self.rows))

    @functools.cached_property
    def macs(self) -> int:
        """MACs of Q K^T, and as many of P V."""
        return self.scores * self.geometry.head_dim

    def key_blocks(self, row: BlockRow) -> int:
        return ceil_div(row.keys, self.blocks.block_k)

    @functools.cached_property
    def chunks(self) -> int:
        """Query blocks per product (with split keys: the chunks of the one query block)."""
        return sum(r.count for r in self.rows)

    @functools.cached_property
    def rescales(self) -> int:
        """Online-softmax vector work beyond the per-score passes, in elements: each key block after a
        query block's (or chunk's) first rescales its output rows (head_dim each) and their max and sum (2
        each); split chunks are combined (rescaled and added: head_dim + 2 per row and chunk after the
        first); the output is divided by the row sums once."""
        g = self.geometry
        width = g.head_dim + 2
        blocks = sum(r.count * r.queries * (self.key_blocks(r) - 1) for r in self.rows)
        combine = (self.chunks - 1) * g.queries if self.blocks.splits > 1 else 0
        return self._per_product(g.group * ((blocks + combine) * width + g.queries * g.head_dim))

    def key_reads(self, resident: bool) -> int:
        """Key (or value) elements fetched: each key once when they stay on chip for the whole kernel,
        else each query block's computed keys."""
        fetched = self.keys if resident else sum(r.count * r.keys for r in self.rows)
        return self._per_product(fetched * self.geometry.head_dim)


def block_rows(geometry: AttentionGeometry, keys: int, blocks: Blocks) -> tuple[BlockRow, ...]:
    """The query blocks of one product, grouped where they compute alike (see the module docstring)."""
    queries, bq, bk, window = geometry.queries, blocks.block_q, blocks.block_k, geometry.window
    offset = keys - queries
    alike: dict[tuple[int, int, int], int] = {}  # (queries, keys, masked) -> query blocks (counted: a hot loop)
    for start in range(0, queries, bq):
        end = min(queries, start + bq)
        if not geometry.causal:
            low, high, masked = 0, keys, 0
        else:
            first, last = offset + start, offset + end - 1  # key positions of the block's first and last query
            high = min(keys, (last // bk + 1) * bk)
            low = (max(0, first - window + 1) // bk) * bk if window else 0
            # Blocks from cut_above hold a key after the first query; blocks before cut_below one before the
            # last query's window.
            cut_above = (first + 1) // bk * bk if first + 1 < high else high
            cut_below = min(high, ((last - window) // bk + 1) * bk) if window and last - window >= low else low
            masked = high - low - max(0, cut_above - cut_below)
        row = (end - start, high - low, masked)
        alike[row] = alike.get(row, 0) + 1
    rows = [BlockRow(count, q, k, m) for (q, k, m), count in sorted(alike.items())]
    return tuple(_split(rows, blocks) if blocks.splits > 1 else rows)


def _split(rows: list[BlockRow], blocks: Blocks) -> list[BlockRow]:
    """One query block's key blocks dealt into ``splits`` chunks of whole blocks (the last one shorter)."""
    (row,) = rows
    if row.count != 1 or row.masked:
        raise ValueError("split keys apply to one query block that the mask does not cut (decode)")
    chunk = ceil_div(ceil_div(row.keys, blocks.block_k), blocks.splits) * blocks.block_k
    full, rest = divmod(row.keys, chunk)
    split = [BlockRow(full, row.queries, chunk, 0)] if full else []
    return split + ([BlockRow(1, row.queries, rest, 0)] if rest else [])


@functools.lru_cache(maxsize=4096)
def kernel_work(geometry: AttentionGeometry, keys: int, blocks: Blocks) -> KernelWork:
    """The work of one fused attention over ``keys`` keys with ``blocks``."""
    return KernelWork(geometry, keys, blocks, block_rows(geometry, keys, blocks))


@dataclass(frozen=True)
class KernelBits:
    """Stored bits per element of what the kernel reads and holds."""

    query: int
    key: int
    value: int
    score: int  # scores and probabilities on chip (the vector unit's format)
    accumulator: int


PARTS = ("qk", "scores", "mask", "softmax", "av", "epilogue")


@dataclass(frozen=True)
class KernelChoice:
    """One fused kernel, shared by its steps: the bits of what it reads and writes, and what its blocks are
    chosen from (the pinned sizes, the multiple key blocks keep, the array's MACs per PE). The blocks
    themselves depend on the keys, which grow in decode: see ``blocks``."""

    bits: KernelBits
    pack: int
    block_q: int | None = None
    block_k: int | None = None
    multiple: int = 1

    def __hash__(self) -> int:  # memo keys hash it once per step: keep the hash
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:
        return hash((self.bits, self.pack, self.block_q, self.block_k, self.multiple))

    def blocks(self, geometry: AttentionGeometry, keys: int, machine: Machine) -> Blocks:
        """The blocks this kernel runs with over ``keys`` keys on ``machine``."""
        return choose_blocks(geometry, keys, self.bits, machine, self.pack, self.block_q, self.block_k,
                             self.multiple)


@dataclass(frozen=True)
class KernelPart:
    """A step of a fused attention kernel: which part of it (``PARTS``: Q K^T, an element-wise op on the
    scores, the mask, the online softmax, P V, P V's output conversion), of which kernel."""

    part: str
    choice: KernelChoice

    def __hash__(self) -> int:  # memo keys hash it once per step: keep the hash
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:
        return hash((self.part, self.choice))

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"unknown kernel part {self.part!r}")


def query_elements(geometry: AttentionGeometry) -> int:
    """Elements of the kernel's queries, and of its output."""
    return geometry.products * geometry.group * geometry.queries * geometry.head_dim


@dataclass(frozen=True)
class Machine:
    """What the kernel's blocks depend on of a hardware (hashable, for the memoised search)."""

    name: str
    rows: int
    cols: int
    dataflow: str
    arrays: int
    ifmap_bytes: int
    filter_bytes: int
    ofmap_bytes: int
    dram_bytes_per_cycle: float  # sustained (the peak times memory.dram_efficiency)
    lanes: int
    softmax_cycles: float  # per score: row max, exp, row sum
    mul_cycles: float  # per rescaled element
    double_buffered: bool = True  # array.double_buffered

    @classmethod
    def of(cls, hardware: Hardware) -> Machine:
        array, memory = hardware.array, hardware.memory
        return cls(hardware.name, array.rows, array.cols, array.dataflow, hardware.arrays, memory.ifmap_buffer_bytes,
                   memory.filter_buffer_bytes, memory.ofmap_buffer_bytes, memory.sustained_bytes_per_cycle,
                   hardware.sfu_lanes, hardware.sfu_cost("softmax"), hardware.sfu_cost("mul"), array.double_buffered)


def resident(geometry: AttentionGeometry, keys: int, bits: KernelBits, machine: Machine) -> bool:
    """Whether one product's keys and values stay in the filter buffer for the whole kernel."""
    return ceil_div(keys * geometry.head_dim * (bits.key + bits.value), 8) <= machine.filter_bytes


def working_set(geometry: AttentionGeometry, blocks: Blocks, bits: KernelBits) -> dict[str, int]:
    """Bytes each buffer holds while the kernel runs one block: a query block and its probabilities in the
    activation buffer; a key and a value block, double-buffered, in the filter buffer; the score tile and
    the output accumulator in the accumulator buffer."""
    rows = geometry.group * min(blocks.block_q, geometry.queries)
    dim, bk = geometry.head_dim, blocks.block_k
    return {
        "ifmap": ceil_div(rows * (dim * bits.query + bk * bits.score), 8),
        "filter": ceil_div(2 * bk * dim * (bits.key + bits.value), 8),
        "ofmap": ceil_div(rows * (bk + dim) * bits.accumulator, 8),
    }


def misfit(geometry: AttentionGeometry, blocks: Blocks, bits: KernelBits, machine: Machine) -> str | None:
    """The buffer the kernel's working set does not fit, described; None when it fits."""
    capacity = {"ifmap": machine.ifmap_bytes, "filter": machine.filter_bytes, "ofmap": machine.ofmap_bytes}
    for buffer, need in working_set(geometry, blocks, bits).items():
        if need > capacity[buffer]:
            return f"needs {need:,} bytes of the {capacity[buffer]:,}-byte {buffer} buffer"
    return None


def estimate_cycles(geometry: AttentionGeometry, keys: int, blocks: Blocks, bits: KernelBits, machine: Machine,
                    pack: int) -> int:
    """What the block search ranks candidates by: both products' array cycles (each row's products dealt
    to the arrays) and the vector unit's online softmax, serial; or the DRAM time of the keys and values
    the blocks fetch if that is longer."""
    work = kernel_work(geometry, keys, blocks)
    m = machine
    compute = 0
    # (products, query rows, keys) run one after another; split chunks run at once, as the longest
    products = [(geometry.products * row.count, row.queries, row.keys) for row in work.rows]
    if blocks.splits > 1:
        products = [(geometry.products * work.chunks, 1, max(row.keys for row in work.rows))]
    for count, queries, row_keys in products:
        per_array, rows = ceil_div(count, m.arrays), geometry.group * queries
        for k, n in ((geometry.head_dim, row_keys), (row_keys, geometry.head_dim)):
            compute += product_cycles(rows, k, n, m.rows, m.cols, m.dataflow, per_array, pack, None, "default",
                                      m.double_buffered)[0]
    compute += math.ceil((work.scores * m.softmax_cycles + work.rescales * m.mul_cycles) / m.lanes)
    fetched = work.key_reads(resident(geometry, keys, bits, m)) * (bits.key + bits.value)
    return max(compute, math.ceil(fetched / 8 / m.dram_bytes_per_cycle))


@functools.lru_cache(maxsize=4096)
def choose_blocks(geometry: AttentionGeometry, keys: int, bits: KernelBits, machine: Machine, pack: int,
                  block_q: int | None = None, block_k: int | None = None, multiple: int = 1) -> Blocks:
    """The blocks the kernel runs with: the pinned sizes, else, of the candidates that fit the buffers, the
    one with the fewest estimated cycles (ties: larger query blocks, larger key blocks, fewer chunks); key
    blocks a multiple of ``multiple`` (the group of an N:M pattern selected along them). A decode step (one
    query) takes the largest key blocks that fit and, when its products do not fill the chip's arrays,
    tries dealing them to 2, 4, ... chunks, up to the arrays."""
    if block_k is not None and block_k % multiple:
        raise InputError(f"attention.block_k {block_k} must be a multiple of {multiple}, the group of the N:M "
                         "pattern selected along each key block")
    best: tuple[tuple[int, int, int, int], Blocks] | None = None
    problems: list[str] = []
    candidates = _candidates(geometry, keys, bits, machine, block_q, block_k, multiple)
    for blocks in candidates:
        problem = misfit(geometry, blocks, bits, machine)
        if problem is not None:
            problems.append(f"block_q {blocks.block_q}, block_k {blocks.block_k} {problem}")
            continue
        if len(candidates) == 1:
            return blocks
        rank = (estimate_cycles(geometry, keys, blocks, bits, machine, pack), -blocks.block_q, -blocks.block_k,
                blocks.splits)
        if best is None or rank < best[0]:
            best = (rank, blocks)
    if best is None:
        what = "the pinned attention blocks do not" if block_q or block_k else "no attention block size does"
        raise InputError(f"hardware {machine.name}: {what} fit its buffers ({problems[0]})")
    return best[1]


def _candidates(geometry: AttentionGeometry, keys: int, bits: KernelBits, machine: Machine, block_q: int | None,
                block_k: int | None, multiple: int) -> list[Blocks]:
    """The blocks the search tries (see ``choose_blocks``)."""
    q_options = [block_q] if block_q is not None else sorted({min(b, geometry.queries) for b in BLOCK_CHOICES})
    if geometry.queries > 1:
        return [Blocks(bq, bk) for bq in q_options for bk in _key_blocks(keys, block_k, multiple)]
    # Decode: every key block is visited once whatever its size, so larger key blocks only save rescales:
    # per number of chunks, the largest that fit a chunk.
    counts = [1] if geometry.products >= machine.arrays else [1 << i for i in range(machine.arrays.bit_length())]
    candidates = []
    for splits in counts:
        options = _key_blocks(ceil_div(keys, splits), block_k, multiple)
        fitting = (bk for bk in reversed(options) if misfit(geometry, Blocks(1, bk), bits, machine) is None)
        blocks = Blocks(1, next(fitting, options[0]), splits)
        if splits == 1:
            candidates.append(blocks)
        elif ceil_div(keys, blocks.block_k) >= splits and not kernel_work(geometry, keys, Blocks(1, blocks.block_k)
                                                                           ).masked_scores:
            candidates.append(blocks)  # chunks of whole blocks (a block the mask cuts is not split)
    return candidates


def _key_blocks(keys: int, block_k: int | None, multiple: int) -> list[int]:
    """Key block sizes to try over ``keys`` keys, ascending: the pinned one, else the choices below it and
    one block of every key (each a multiple of ``multiple``)."""
    if block_k is not None:
        return [block_k]
    whole = ceil_div(keys, multiple) * multiple
    return [b for b in BLOCK_CHOICES if b % multiple == 0 and b < whole] + [whole]
