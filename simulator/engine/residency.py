"""Residency: where each tensor lives during the pass, and which ones go through DRAM.

The model, simple enough to check by hand:

- Weights live in DRAM and are read by every step that uses them (``weights_streamed: false``: they
  were preloaded on chip and move no DRAM bytes). Model inputs and state (a KV cache) live in DRAM.
- An activation read only by the next step, an SFU step, is *streamed*: the reader consumes it tile
  by tile as it is produced, so element-wise chains (dequantize -> bias -> gelu -> quantize) never
  hold, spill or re-read their intermediate tensors. So is an operand the vector unit dequantizes for
  the array (group-quantized weights, a quantized KV cache): tile by tile into the filter buffer. A
  concatenation of several activations (a mixed batch's attention outputs) streams none of them: it
  reads each from the activation buffer.
- Every other activation is *materialised* in the activation buffer (the ifmap buffer: ops read their
  inputs there and their outputs drain to it) from the step that writes it to its last reader. Tensors
  are placed in the order they are produced: one stays on chip if it fits next to the tensors already
  placed there at every step of its life, else it is *spilled*: written to DRAM once, read from DRAM by
  each reader (as often as that reader sweeps it, see costs).
- A tensor whose producer and readers are all BMMs of P independent products (attention heads times
  batch) or SFU steps is processed product by product, so only 1/P of it is live at a time: the scores
  of one head stay on chip when one head's scores fit, whatever the number of heads.
- The scores and probabilities of a fused attention kernel stay on chip, one block at a time, in the
  kernel's working set (its blocks are chosen to fit the buffers) rather than among the activations.
- Activations nobody reads (the pass's outputs) and the entries appended to state are also written to
  DRAM once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simulator.engine.steps import Lowered
from simulator.spec.hardware import Hardware
from simulator.units import ceil_div

STREAM, CHIP, DRAM = "stream", "chip", "dram"


@dataclass(frozen=True)
class Placement:
    home: dict[str, str]  # tensor -> STREAM, CHIP or DRAM
    written: frozenset[str]  # activations their producer also writes to DRAM (spilled, outputs, appended entries)
    footprint_bytes: dict[str, int]  # materialised activations: bytes live at a time (a product's share)
    peak_bytes: int  # most activation-buffer bytes in use at any step (on-chip activations)
    peak_live_bytes: int  # most bytes of materialised activations alive at any step, on chip or spilled
    lifetimes: dict[str, tuple[int, int]]  # materialised activation -> (its producer's step, its last reader's)


def tensor_bytes(elements: int, bits: int) -> int:
    return ceil_div(elements * bits, 8)


def _readers(steps: tuple[Any, ...]) -> dict[str, list[int]]:
    """Tensor name -> the indices of the steps that read it, in order."""
    readers: dict[str, list[int]] = {}
    for index, step in enumerate(steps):
        for name in dict.fromkeys(step.reads):
            readers.setdefault(name, []).append(index)
    return readers


def _fixed_homes(tensors: dict[str, Any], hardware: Hardware) -> dict[str, str]:
    """Where the tensors no step produces live: inputs and state in DRAM, weights in DRAM or preloaded."""
    home: dict[str, str] = {}
    for name, tensor in tensors.items():
        if tensor.kind in ("input", "state"):
            home[name] = DRAM
        elif tensor.kind == "weight":
            home[name] = DRAM if hardware.memory.weights_streamed else CHIP
    return home


def place(lowered: Lowered, hardware: Hardware) -> Placement:
    steps, tensors = lowered.steps, lowered.tensors
    readers = _readers(steps)
    home = _fixed_homes(tensors, hardware)
    capacity = hardware.memory.ifmap_buffer_bytes
    used = [0] * (len(steps) + 1)  # bytes per step: on chip, and live anywhere (lists: most lifetimes are short)
    live = [0] * (len(steps) + 1)
    written: set[str] = set(lowered.appends.values())
    footprints: dict[str, int] = {}
    lifetimes: dict[str, tuple[int, int]] = {}
    for index, step in enumerate(steps):
        for name in step.writes:
            users = readers.get(name, [])
            if not users:
                written.add(name)
            if name in lowered.filter_streams or (len(users) == 1 and users[0] == index + 1
                                                  and steps[index + 1].unit == "sfu" and not _joins(steps[index + 1])):
                home[name] = STREAM
                continue
            if name in lowered.kernel_local:  # held by the kernel's working set (checked when its blocks are chosen)
                home[name] = CHIP
                continue
            need = ceil_div(tensors[name].stored_bytes,
                            _products(steps, [index, *users]))
            last = users[-1] if users else index
            lifetimes[name] = (index, last)
            for at in range(index, last + 1):
                live[at] += need
            if max(used[index:last + 1]) + need <= capacity:
                for at in range(index, last + 1):
                    used[at] += need
                home[name] = CHIP
            else:
                home[name] = DRAM
                written.add(name)
            footprints[name] = need
    return Placement(home, frozenset(written), footprints, max(used), max(live), lifetimes)


def _joins(step: Any) -> bool:
    """Whether an SFU step joins several activations into one (a mixed batch's attention outputs): it reads
    each of them from the activation buffer."""
    activations = [name for name in step.reads if not name.endswith((".weight", ".bias"))]
    return step.op.role == "concat" and len(activations) > 1


def _products(steps: tuple[Any, ...], users: list[int]) -> int:
    """P when every user is a BMM of P products or an SFU step (at least one BMM), else 1."""
    matrix = {(steps[i].op.kind, steps[i].op.batch) for i in users if steps[i].unit == "array"}
    if len(matrix) == 1:
        kind, products = matrix.pop()
        return products if kind == "bmm" else 1
    return 1
