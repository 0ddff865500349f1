"""Reading a checkpoint directory: ``config.json`` and the safetensors headers, never the weights (I/O).

A safetensors file starts with an 8-byte little-endian header length and a JSON header naming every
tensor with its dtype and shape; a sharded checkpoint lists its shards in ``model.safetensors.index.json``
(``weight_map``). ``check_headers`` compares the quantized tensors the config implies with the headers.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.spec.checkpoint_schemes import Namer
from workloads.errors import InputError
from workloads.ops import Op

MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on a header


@dataclass(frozen=True)
class TensorHeader:
    dtype: str
    shape: tuple[int, ...]


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
    return {name: TensorHeader(str(entry["dtype"]), tuple(int(n) for n in entry["shape"]))
            for name, entry in header.items() if name != "__metadata__"}


def check_headers(checkpoint: Checkpoint, weights: Mapping[str, str], linears: Sequence[Op], namer: Namer) -> None:
    """The stored tensors of every linear layer agree with the format derived for it (``weights``: op name ->
    accelsim format and group, e.g. ``int4/128``); a mismatch is refused naming the tensor."""
    headers = checkpoint.headers
    if headers is None:
        return
    method = (checkpoint.quantization or {}).get("quant_method")
    for op in linears:
        for name, dtype, shape in expected_tensors(method, weights.get(op.name, ""), namer(op), op.k, op.n):
            _expect(headers, name, dtype, shape)


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
