"""The weight masks a run config's sparsity needs: a mask file's (mask_files.py), a checkpoint directory's own
(checkpoint_masks.py) or seeded ones, or None when its sparsity is timed by the closed form (I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from workloads.errors import InputError
from workloads.ops import Op
from workloads.vocabulary import PRUNED_LINEAR_ROLES

if TYPE_CHECKING:
    from simulator.spec.checkpoint_masks import CheckpointMasks
    from simulator.spec.mask_files import MaskProvider
    from simulator.spec.run_config import Policy


def weight_masks(policy: Policy, ops: Iterable[Op] | None = None) -> MaskProvider | CheckpointMasks | None:
    """The masks ``policy`` needs (unstructured, N:M timed through masks, or read from a file or checkpoint), or
    None; checked against ``ops`` where given (held experts do no work and need none)."""
    weights = policy.config.sparsity.weights
    if weights is None or not weights.uses_masks:
        return None
    from simulator.spec.mask_files import MaskProvider, mask_path

    base = policy.source.parent if policy.source else None
    path = mask_path(weights, base)
    masks: MaskProvider | CheckpointMasks
    if path is None or not path.is_dir():
        masks = MaskProvider(weights, base)
    else:
        from simulator.formats.sparsity import SparsityPattern
        from simulator.spec.checkpoint_masks import CheckpointMasks

        if not (path / "config.json").is_file():
            raise InputError(f"{path}: is a directory but not a checkpoint (no config.json); mask files are .npy, "
                             ".npz or .safetensors")
        if weights.mask_layout != "out_in":
            raise InputError(f"mask_layout {weights.mask_layout}: a checkpoint stores its weights out_in")
        masks = CheckpointMasks(path, SparsityPattern.parse(weights.pattern) if weights.pattern else None)
    if ops is not None:
        masks.check_ops([op for op in ops if op.role in PRUNED_LINEAR_ROLES and not op.held])
    return masks
