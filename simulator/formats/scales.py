"""Which number formats carry scale factors, and which units apply them (pure)."""

from __future__ import annotations

from simulator.formats.precision import Precision


def takes_scales(precision: Precision) -> bool:
    """Whether values in ``precision`` take configured scales (precision.weight_scales, per-token activation
    scales): integers and FP8; MX and NVFP4 carry their own block scales, 16- and 32-bit floats none."""
    return precision.block is None and not (precision.is_float and precision.bits >= 16)


def carries_scales(fmt: Precision) -> bool:
    """Whether values in ``fmt`` carry scales of any kind (block formats their own)."""
    return fmt.block is not None or takes_scales(fmt)


def same_blocks(stored: Precision, compute: Precision) -> bool:
    """Whether a unit computing in the block format ``compute`` applies ``stored``'s block scales itself
    (the same block size and scale format: MXFP4 weights on MXFP8 units widen only their elements)."""
    mine, theirs = compute.block, stored.block
    return mine is not None and theirs is not None and (mine.block, mine.scale) == (theirs.block, theirs.scale)
