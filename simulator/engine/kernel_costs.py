"""What the steps of a fused attention kernel cost beyond an ordinary step's model (pure; the model is
in docs/engine.md, "Attention kernels"): its work found once per step, Q K^T and P V as the products of
its block rows, the score ops on the scores its blocks compute, and the kernel's record columns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from simulator.engine.attention import KernelWork, Machine, kernel_work, query_elements, resident
from simulator.engine.residency import DRAM, Placement
from simulator.engine.steps import Step, evolve_step
from workloads.ops import Tensor, evolve


@dataclass(frozen=True)
class KernelColumns:
    """A step's attention-kernel columns of the results, and the elements an SFU step works on."""

    elements: int
    kernel: str = ""
    block_q: int = 0
    block_k: int = 0
    key_chunks: int = 0
    closed_form_dram_bytes: int = 0


class Works:
    """The work of the fused kernel a step belongs to, at its keys, found once per kernel, geometry and keys
    (memoised by identity: a decode step's kernel and geometry stay the same objects as its keys grow)."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self._found: dict[tuple[int, int, int], tuple[object, object, KernelWork]] = {}

    def of(self, step: Step) -> KernelWork | None:
        """None outside a fused kernel, and for its epilogue (output-sized: neither its keys nor its cost
        depend on the blocks)."""
        op, kernel = step.op, step.kernel
        if kernel is None or op.attention is None or kernel.part == "epilogue":
            return None
        geometry, choice = op.attention, kernel.choice
        keys = geometry.keys_of(op)
        key = (id(choice), id(geometry), keys)
        found = self._found.get(key)
        if found is not None and found[0] is choice and found[1] is geometry:
            return found[2]
        work = kernel_work(geometry, keys, choice.blocks(geometry, keys, self.machine))
        self._found[key] = (choice, geometry, work)
        return work


def sfu_elements(step: Step, work: KernelWork | None) -> int:
    """Elements an SFU step works on: a fused kernel's score ops only the scores its blocks compute (the
    mask only those in the blocks it cuts)."""
    if work is None or step.kernel is None:  # (an epilogue has no work: it is output-sized)
        return step.op.elements
    return work.masked_scores if step.kernel.part == "mask" else work.scores


def rescaled_elements(step: Step, work: KernelWork | None) -> int:
    """The online softmax's rescales (on its softmax step; 0 elsewhere)."""
    return work.rescales if work is not None and step.kernel is not None and step.kernel.part == "softmax" else 0


def sized_tensors(step: Step, tensors: dict[str, Tensor], elements: int) -> dict[str, Tensor]:
    """``tensors`` with the step's score-sized tensors cut to the ``elements`` its blocks compute."""
    if elements == step.op.elements:
        return tensors
    sized = dict(tensors)
    for name in (*step.reads, *step.writes):
        if tensors[name].elements == step.op.elements:
            sized[name] = evolve(tensors[name], elements=elements)
    return sized


def row_products(step: Step, tensors: dict[str, Tensor], work: KernelWork, machine: Machine,
                 ) -> Iterator[tuple[Step, dict[str, Tensor], int | None]]:
    """Q K^T or P V as the products of the kernel's block rows: each row's step, its tensors cut to its
    share, and the bytes of B it brings from B's home (None: as any product fetches it)."""
    op, kernel = step.op, step.kernel
    assert kernel is not None and op.attention is not None
    geometry = op.attention
    whole = len(work.rows) == 1 and work.rows[0].count == 1 and work.rows[0].keys == work.keys
    kept_once = resident(geometry, work.keys, kernel.choice.bits, machine)
    whole_b = tensors[step.reads[1]].bytes_of(op.batch * op.k * op.n)
    for index, row in enumerate(work.rows):
        fetched = (whole_b if index == 0 else 0) if kept_once else None
        if whole and geometry.products == op.batch and geometry.group * row.queries == op.m:
            yield step, tensors, fetched  # one block row covers the product (decode)
            continue
        yield (*_product(step, tensors, geometry.products * row.count, geometry.group * row.queries, row.keys),
               fetched)


def concurrent_chunks(step: Step, tensors: dict[str, Tensor], work: KernelWork) -> tuple[Step, dict[str, Tensor]]:
    """Split keys (decode): the chunks run at once, as independent products dealt to the arrays, so they
    take the time of all of them as products of the longest chunk (their counts are the rows')."""
    geometry = work.geometry
    chunks = geometry.products * work.chunks
    return _product(step, tensors, chunks, geometry.group * geometry.queries, max(row.keys for row in work.rows))


def _product(step: Step, tensors: dict[str, Tensor], batch: int, m: int, keys: int,
             ) -> tuple[Step, dict[str, Tensor]]:
    """``step`` as ``batch`` products of ``m`` rows against ``keys`` keys, its operands and output cut to
    them."""
    op, kernel = step.op, step.kernel
    assert kernel is not None
    sub = evolve(op, batch=batch, m=m, n=keys) if kernel.part == "qk" else evolve(op, batch=batch, m=m, k=keys)
    sized = dict(tensors)
    a, b = step.reads[0], step.reads[1]
    for name, elements in ((a, batch * m * sub.k), (b, batch * sub.k * sub.n),
                           *((name, batch * m * sub.n) for name in step.writes)):
        sized[name] = evolve(tensors[name], elements=elements)
    return evolve_step(step, op=sub), sized


def columns(step: Step, work: KernelWork | None, tensors: dict[str, Tensor], placement: Placement,
            machine: Machine) -> KernelColumns:
    """The kernel columns of ``step``'s record (an epilogue's blocks are on its kernel's other rows)."""
    elements = sfu_elements(step, work) if step.unit == "sfu" else 0
    if step.kernel is not None and step.kernel.part == "epilogue":
        return KernelColumns(elements, "fused", closed_form_dram_bytes=_written(step, tensors, placement))
    if work is None:
        return KernelColumns(elements, "materialized" if step.op.attention is not None else "")
    blocks = work.blocks
    return KernelColumns(elements, "fused", blocks.block_q, blocks.block_k, blocks.splits,
                         closed_form(step, work, tensors, placement, machine))


def _written(step: Step, tensors: dict[str, Tensor], placement: Placement) -> int:
    """The kernel's output, at its stored bytes, if this step writes it to DRAM."""
    assert step.op.attention is not None
    rows = query_elements(step.op.attention)
    return sum(tensors[name].bytes_of(rows) for name in step.writes if name in placement.written)


def closed_form(step: Step, work: KernelWork, tensors: dict[str, Tensor], placement: Placement,
                machine: Machine) -> int:
    """The DRAM bytes of a fused kernel's step by the kernel's closed form, for the operands that live in
    DRAM (at their stored bytes, scales included): Q read once (Q K^T); K (Q K^T) and V (P V) read once
    if they stay on chip for the whole kernel, else once per query block that computes them; O written
    once (by P V or its epilogue). Scores and probabilities move nothing."""
    kernel, geometry, home = step.kernel, work.geometry, placement.home
    assert kernel is not None
    if kernel.part not in ("qk", "av"):
        return 0
    fetched = work.key_reads(resident(geometry, work.keys, kernel.choice.bits, machine))
    closed = tensors[step.reads[1]].bytes_of(fetched) if home[step.reads[1]] == DRAM else 0
    if kernel.part == "qk" and home[step.reads[0]] == DRAM:
        closed += tensors[step.reads[0]].bytes_of(query_elements(geometry))
    return closed + _written(step, tensors, placement)
