"""Reading a checkpoint directory: ``config.json`` and the safetensors headers, never the weights (I/O).

A safetensors file starts with an 8-byte little-endian header length and a JSON header naming every
tensor with its dtype and shape; a sharded checkpoint lists its shards in ``model.safetensors.index.json``
(``weight_map``). ``check_headers`` compares the quantized tensors the config implies with the headers.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.spec.checkpoint_schemes import Namer
from workloads.errors import InputError
from workloads.ops import Op

MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on a header
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


@dataclass(frozen=True)
class TensorHeader:
    dtype: str
    shape: tuple[int, ...]
    path: Path  # the safetensors file that holds it
    data: tuple[int, int]  # [start, stop) byte offsets of its data in that file

    @property
    def present(self) -> bool:
        """Whether the file holds the data (a kept header alone, as in the test fixtures, does not)."""
        start, stop = self.data
        size = DTYPE_BYTES.get(self.dtype, 0) * math.prod(self.shape)
        return stop - start == size and stop <= self.path.stat().st_size


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's config and, when it has weights, every tensor's dtype and shape (None: config only)."""

    directory: Path
    config: Mapping[str, Any]
    headers: dict[str, TensorHeader] | None

    @property
    def quantization(self) -> Mapping[str, Any] | None:
        quantization = self.config.get("quantization_config")
        if quantization is not None and not isinstance(quantization, Mapping):
            raise InputError(f"{self.directory}/config.json: quantization_config must be an object")
        return quantization

    @property
    def has_weights(self) -> bool:
        """Whether the checkpoint holds its tensors' data, not only their headers."""
        return self.headers is not None and all(header.present for header in self.headers.values())


def read_checkpoint(directory: str | Path) -> Checkpoint:
    """The checkpoint in ``directory``: its config.json, and the headers of model.safetensors or of the
    shards its index lists (none: the config alone)."""
    root = Path(directory)
    config_path = root / "config.json"
    if not config_path.is_file():
        raise InputError(f"{root}: not a checkpoint directory (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{config_path}: cannot read ({exc.__class__.__name__})") from None
    index, single = root / "model.safetensors.index.json", root / "model.safetensors"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{index}: not a safetensors index ({exc.__class__.__name__})") from None
        shards = sorted(set(weight_map.values()))
    elif single.is_file():
        shards = [single.name]
    else:
        return Checkpoint(root, config, None)
    headers: dict[str, TensorHeader] = {}
    for shard in shards:
        headers.update(read_header(root / shard))
    return Checkpoint(root, config, headers)


def read_header(path: Path) -> dict[str, TensorHeader]:
    """Tensor name -> dtype and shape, from the header of one safetensors file."""
    if not path.is_file():
        raise InputError(f"{path}: the shard the checkpoint's index lists is missing")
    with path.open("rb") as file:
        prefix = file.read(8)
        size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
        if not 0 < size <= MAX_HEADER_BYTES:
            raise InputError(f"{path}: not a safetensors file (header length {size})")
        text = file.read(size)
        if len(text) != size:
            raise InputError(f"{path}: its safetensors header is cut short ({len(text)} of {size} bytes)")
        try:
            header = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(f"{path}: its safetensors header is not JSON") from None
    start = 8 + size  # offsets count from the end of the header
    try:
        return {name: TensorHeader(str(entry["dtype"]), tuple(int(n) for n in entry["shape"]), path,
                                   (start + int(entry["data_offsets"][0]), start + int(entry["data_offsets"][1])))
                for name, entry in header.items() if name != "__metadata__"}
    except (KeyError, TypeError, ValueError, IndexError):
        raise InputError(f"{path}: its safetensors header lacks a tensor's dtype, shape or data_offsets") from None


def read_data(header: TensorHeader) -> bytes:
    """The raw bytes of one tensor (only that tensor is read)."""
    start, stop = header.data
    with header.path.open("rb") as file:
        file.seek(start)
        data = file.read(stop - start)
    if len(data) != stop - start:
        raise InputError(f"{header.path}: a tensor's data is cut short ({len(data)} of {stop - start} bytes; a "
                         "header kept without its weights?)")
    return data


def check_headers(checkpoint: Checkpoint, weights: Mapping[str, str], linears: Sequence[Op], namer: Namer,
                  bitmasked: frozenset[str] = frozenset()) -> None:
    """The stored tensors of every linear layer agree with the format derived for it (``weights``: op name ->
    accelsim format and group, e.g. ``int4/128``; ``bitmasked``: the ops a sparse-24-bitmask checkpoint
    compresses); a mismatch is refused naming the tensor."""
    headers = checkpoint.headers
    if headers is None:
        return
    method = (checkpoint.quantization or {}).get("quant_method")
    for op in linears:
        expected = expected_tensors(method, weights.get(op.name, ""), namer(op), op.k, op.n)
        if op.name in bitmasked:
            expected = bitmask_tensors(expected, namer(op), op.k, op.n)
        for name, dtype, shape in expected:
            _expect(headers, name, dtype, shape)


def bitmask_tensors(expected: list[tuple[str, str | None, tuple[int, ...]]], module: str, k: int, n: int,
                    ) -> list[tuple[str, str | None, tuple[int, ...]]]:
    """``expected`` for a module compressed by sparse-24-bitmask: its ``weight`` (unquantized, or int8/FP8
    values) becomes the kept half, ``compressed`` (N x K/2), with ``bitmask`` (U8, a bit per weight);
    packed weights are not compressed again."""
    if any(name == f"{module}.weight_packed" for name, _, _ in expected):
        return expected
    dtype = next((dtype for name, dtype, _ in expected if name == f"{module}.weight"), None)
    rest = [entry for entry in expected if entry[0] != f"{module}.weight"]
    return [(f"{module}.compressed", dtype, (n, k // 2)), (f"{module}.bitmask", "U8", (n, -(-k // 8))), *rest]


def expected_tensors(method: str | None, fmt: str, module: str, k: int, n: int,
                     ) -> list[tuple[str, str | None, tuple[int, ...]]]:
    """(name, dtype or None for any, shape) of the tensors storing a K x N layer in ``fmt`` (``int4/128``):
    GPTQ/AWQ ``qweight`` (packed int32) and ``scales``; compressed-tensors ``weight_packed`` (N x K packed;
    NVFP4: uint8 with an E4M3 scale per 16), ``weight_scale`` per group, FP8 and int8 ``weight`` (block-wise
    FP8: with ``weight_scale_inv``, or compressed-tensors' ``weight_scale``, per block);
    bitsandbytes NF4's flattened ``weight`` (two codes per byte) and ``weight.absmax`` per 64."""
    name, _, group_text = fmt.partition("/")
    if name.startswith("fp8") and "x" in group_text:  # block-wise FP8: a scale per block of output x input
        rows, cols = (int(size) for size in group_text.split("x"))
        scale = f"{module}.weight_scale_inv" if method == "fp8" else f"{module}.weight_scale"
        return [(f"{module}.weight", "F8_E4M3", (n, k)), (scale, None, (-(-n // rows), -(-k // cols)))]
    group = int(group_text) if group_text else 0
    if name == "nvfp4":
        return [(f"{module}.weight_packed", "U8", (n, k // 2)), (f"{module}.weight_scale", "F8_E4M3", (n, k // 16))]
    if name in ("nf4", "nf4_dq"):
        return [(f"{module}.weight", "U8", (n * k // 2, 1)),
                (f"{module}.weight.absmax", "U8" if name == "nf4_dq" else "F32", (n * k // 64,))]
    if name.startswith("fp8"):
        return [(f"{module}.weight", "F8_E4M3", (n, k))]
    if not name.startswith("int"):
        return []
    bits = int(name[3:])
    scales = [(f"{module}.scales", None, (k // group, n))] if group else []
    if method in ("gptq", "awq"):
        packed = (k * bits // 32, n) if method == "gptq" else (k, n * bits // 32)
        return [(f"{module}.qweight", "I32", packed), *scales]
    if bits < 8:
        return [(f"{module}.weight_packed", "I32", (n, k * bits // 32)),
                *([(f"{module}.weight_scale", None, (n, k // group))] if group else [])]
    return [(f"{module}.weight", "I8", (n, k))]


def _expect(headers: Mapping[str, TensorHeader], name: str, dtype: str | None, shape: tuple[int, ...]) -> None:
    found = headers.get(name)
    if found is None:
        raise InputError(f"safetensors: {name} is missing (the quantization config implies it)")
    if dtype is not None and found.dtype != dtype:
        raise InputError(f"safetensors: {name} is {found.dtype}, the quantization config implies {dtype}")
    if found.shape != shape:
        raise InputError(f"safetensors: {name} has shape {list(found.shape)}, the quantization config implies "
                         f"{list(shape)}")
