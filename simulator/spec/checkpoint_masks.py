"""Weight masks read from a sparse checkpoint's own tensors (I/O), one tensor at a time.

A module's kept weights come from the first of these it stores:

- ``{module}.bitmask`` (compressed-tensors ``sparse-24-bitmask``): uint8, N x ceil(K/8), bit j (least
  significant first) of byte i of a row flags input 8i + j; the kept values are ``{module}.compressed``;
- ``{module}.weight_packed`` (compressed-tensors ``pack-quantized``, symmetric): int32 words of 4- or
  8-bit codes packed densely along K, least significant first, each offset by 2^(bits-1): a kept weight
  is a code other than that offset. Asymmetric weights (a ``weight_zero_point``) are refused;
- ``{module}.weight`` (dense, or a checkpoint whose sparsity format is ``dense``): BF16, F16, F32,
  F8_E4M3 or I8, where a kept weight is any value but +-0.

Masks are stored N x K (a PyTorch Linear's weight) and handed to the engine K x N. With a pattern, each
mask must follow it along K (refused naming the tensor otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from simulator.formats.sparsity import SparsityPattern
from simulator.spec.checkpoint_files import TensorHeader, read_checkpoint, read_data
from simulator.spec.checkpoint_schemes import module_namer, stored_parts
from simulator.spec.mask_files import off_pattern
from workloads.errors import InputError
from workloads.ops import Op

# dtype -> (numpy view of its bits, the bits that are zero for +-0)
_DENSE: dict[str, tuple[type[np.unsignedinteger[Any]], int]] = {
    "BF16": (np.uint16, 0x7FFF), "F16": (np.uint16, 0x7FFF), "F32": (np.uint32, 0x7FFFFFFF),
    "F8_E4M3": (np.uint8, 0x7F), "I8": (np.uint8, 0xFF)}


class CheckpointMasks:
    """Callable op -> K x N boolean mask, read from the checkpoint in ``directory`` (nothing is cached: the
    engine keeps what it needs)."""

    def __init__(self, directory: Path, pattern: SparsityPattern | None) -> None:
        checkpoint = read_checkpoint(directory)
        if checkpoint.headers is None:
            raise InputError(f"{directory}: the checkpoint has no safetensors weights to read masks from")
        self.directory = directory
        self.headers = checkpoint.headers
        self.pattern = pattern
        self.model_type = str(checkpoint.config.get("model_type"))
        self.namer = module_namer(self.model_type)

    def check_ops(self, ops: list[Op]) -> None:
        """Refuse, before any simulation, an op whose module stores no weights to read a mask from."""
        for op in ops:
            for part in stored_parts(self.model_type, op):
                self._source(part)

    def _source(self, op: Op) -> tuple[str, TensorHeader]:
        module = self.namer(op)
        for suffix in ("bitmask", "weight_packed", "weight"):
            header = self.headers.get(f"{module}.{suffix}")
            if header is not None:
                return f"{module}.{suffix}", header
        raise InputError(f"{self.directory}: {module} stores no weights to read the mask of op {op.name!r} from "
                         "(bitmask, weight_packed or weight)")

    def __call__(self, op: Op) -> np.ndarray:
        """The K x N mask of ``op`` (of a fused op: its stored parts' masks side by side)."""
        return np.ascontiguousarray(np.concatenate([self._mask(part) for part in stored_parts(self.model_type, op)],
                                                   axis=1))

    def _mask(self, op: Op) -> np.ndarray:
        name, header = self._source(op)
        if not header.present:
            raise InputError(f"{header.path}: {name} has no data (a header kept without its weights)")
        suffix = name.rpartition(".")[2]
        if suffix == "bitmask":
            mask = _bitmask(name, header, op.k)
        elif suffix == "weight_packed":
            if f"{name.removesuffix('.weight_packed')}.weight_zero_point" in self.headers:
                raise InputError(f"{name}: asymmetric packed weights (a weight_zero_point): accelsim reads masks "
                                 "from symmetric ones")
            mask = _packed(name, header, op.k)
        else:
            mask = _dense(name, header)
        if mask.shape != (op.n, op.k):
            raise InputError(f"{name}: its mask is {list(mask.shape)}, op {op.name} needs {[op.n, op.k]} (N x K)")
        mask = np.ascontiguousarray(mask.T)
        if self.pattern is not None:
            broken = off_pattern(mask, self.pattern)
            if broken:
                raise InputError(f"{name}: not {self.pattern}: {broken}")
        return mask


def _array(header: TensorHeader, dtype: type[np.generic]) -> np.ndarray:
    """The tensor's data, little-endian, in its 2-D shape (each caller checks the shape first)."""
    return np.frombuffer(read_data(header), dtype=np.dtype(dtype).newbyteorder("<")).reshape(header.shape)


def _bitmask(name: str, header: TensorHeader, k: int) -> np.ndarray:
    if header.dtype != "U8" or len(header.shape) != 2 or header.shape[1] != -(-k // 8):
        raise InputError(f"{name}: {header.dtype} {list(header.shape)}, a 2:4 bitmask of {k} inputs is U8 "
                         f"[N, {-(-k // 8)}]")
    bits = _array(header, np.uint8)
    return np.unpackbits(bits, axis=1, count=k, bitorder="little").astype(bool)


def _packed(name: str, header: TensorHeader, k: int) -> np.ndarray:
    words = header.shape[1] if len(header.shape) == 2 else 0
    bits = words * 32 // k if k else 0
    if header.dtype != "I32" or bits not in (4, 8) or words != -(-k * bits // 32):
        raise InputError(f"{name}: {header.dtype} {list(header.shape)} is not 4- or 8-bit codes of {k} inputs "
                         "packed in int32")
    data = _array(header, np.uint32).view(np.uint8)  # little-endian: codes in order
    if bits == 8:
        codes = data[:, :k]
    else:
        codes = np.empty((data.shape[0], data.shape[1] * 2), dtype=np.uint8)
        codes[:, 0::2], codes[:, 1::2] = data & 0x0F, data >> 4
        codes = codes[:, :k]
    return np.asarray(codes != 1 << (bits - 1))  # the code of a zero weight


def _dense(name: str, header: TensorHeader) -> np.ndarray:
    if header.dtype not in _DENSE:
        raise InputError(f"{name}: masks are read from {', '.join(_DENSE)} weights, not {header.dtype}")
    dtype, magnitude = _DENSE[header.dtype]
    if len(header.shape) != 2:
        raise InputError(f"{name}: shape {list(header.shape)}, expected a 2-D weight")
    return np.asarray((_array(header, dtype) & magnitude) != 0)
