"""Weight masks for zero-skipping: generated (seeded) or read from .npy/.npz/.safetensors (a checkpoint
directory's masks: checkpoint_masks.py).

Masks are keyed by op name: a file key matches an op when it equals the op name or ends with
"." + op name, optionally followed by ".weight" (so a pruned Hugging Face checkpoint's
"bert.encoder.layer.0.attention.q.weight" would need renaming to accelsim's op names; the
error names the op it could not find). A ``.npy`` file holds one mask used for every pruned op.
Any non-zero entry is a kept weight. Layout ``out_in`` (PyTorch Linear, N x K) is transposed to K x N.
With a pattern, every mask must follow it along K.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from simulator.engine.masks import magnitude_mask, nm_mask, pattern_violation
from simulator.formats.sparsity import SparsityPattern
from simulator.spec.config_io import unknown_name_message
from simulator.spec.run_config import WeightSparsityConfig
from workloads.errors import InputError
from workloads.ops import Op


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise InputError(f"{path}: no such mask file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a mask file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
    except Exception as exc:
        raise InputError(f"{path}: cannot read masks ({exc.__class__.__name__}: {exc})") from None
    raise InputError(f"{path}: mask files must be .npy, .npz or .safetensors")


def off_pattern(mask: np.ndarray, pattern: SparsityPattern) -> str:
    """Where a K x N ``mask`` keeps more than ``pattern`` allows along K ("" where it follows it)."""
    where = pattern_violation(mask, pattern.n, pattern.m)
    if where is None:
        return ""
    return f"output {where[1]} keeps more than {pattern.n} of inputs {where[0]}..{where[0] + pattern.m - 1}"


def mask_path(config: WeightSparsityConfig, base_dir: Path | None) -> Path | None:
    """The config's mask file or checkpoint directory (relative: to the working directory, else to the run
    config's), or None for seeded masks."""
    if config.mask is None:
        return None
    path = Path(config.mask)
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = base_dir / path
    return path


class MaskProvider:
    """Callable op -> K x N boolean mask, cached per op name."""

    def __init__(self, config: WeightSparsityConfig, base_dir: Path | None = None) -> None:
        self.config = config
        self._cache: dict[str, np.ndarray] = {}
        self._arrays: dict[str, np.ndarray] | None = None
        path = mask_path(config, base_dir)
        if path is not None:
            self._arrays = _read_arrays(path)
            self._path = path

    def check_ops(self, ops: list[Op]) -> None:
        """Refuse a mask file key that matches none of ``ops`` (a misspelt op would be ignored)."""
        if self._arrays is None or "" in self._arrays:
            return
        op_names = [op.name for op in ops]
        for key in self._arrays:
            bare = key.removesuffix(".weight")
            if not any(bare == name or bare.endswith("." + name) for name in op_names):
                raise InputError(f"{self._path}: {unknown_name_message(bare, op_names, 'pruned op')} "
                                 "(mask keys name the model's pruned linear ops)")

    def _lookup(self, op: Op) -> np.ndarray:
        assert self._arrays is not None
        if "" in self._arrays:
            return self._arrays[""]
        for key, array in self._arrays.items():
            bare = key.removesuffix(".weight")
            if bare == op.name or bare.endswith("." + op.name):
                return array
        raise InputError(f"{self._path}: no mask for op {op.name!r}")

    def __call__(self, op: Op) -> np.ndarray:
        if op.name in self._cache:
            return self._cache[op.name]
        if self._arrays is None:
            seed = zlib.crc32(f"{self.config.seed}:{op.name}".encode())
            if self.config.pattern is not None:
                pattern = SparsityPattern.parse(self.config.pattern)
                mask = nm_mask(op.k, op.n, pattern.n, pattern.m, seed)
            else:
                density = self.config.density
                assert density is not None  # exactly one of pattern, density, mask (validated)
                mask = magnitude_mask(op.k, op.n, density, seed)
        else:
            array = self._lookup(op)
            if array.dtype.kind not in "biuf":
                raise InputError(f"{self._path}: mask for {op.name} has dtype {array.dtype}; "
                                 "expected bool, int or float")
            expected = (op.n, op.k) if self.config.mask_layout == "out_in" else (op.k, op.n)
            if array.shape != expected:
                raise InputError(f"{self._path}: mask for {op.name} has shape {array.shape}, expected {expected} "
                                 f"({self.config.mask_layout})")
            mask = array != 0
            if self.config.mask_layout == "out_in":
                mask = mask.T
            mask = np.ascontiguousarray(mask)
            if self.config.pattern is not None:
                pattern = SparsityPattern.parse(self.config.pattern)
                broken = off_pattern(mask, pattern)
                if broken:
                    raise InputError(f"{self._path}: the mask of {op.name} is not {pattern}: {broken}")
        self._cache[op.name] = mask
        return mask
