"""What serving assumes when a run does not say (no imports beyond the standard library: the CLI reads these
for its help text at start-up)."""

from __future__ import annotations

from workloads.ops import MAX_SIZE

# Generated lengths: chat-like prompts around 1,000 tokens and outputs around 250 (requests.parse_lengths).
DEFAULT_PROMPTS = "lognormal:1000,0.5,2048"
DEFAULT_OUTPUTS = "lognormal:250,0.5,1024"


def default_max_tokens(scheduler: str, context: int | None) -> int:
    """The token budget of an iteration when none is given: chunked prefill 512 (Sarathi-Serve's), continuous
    batching the model's context (a whole prompt per prefill), static batching no limit."""
    return {"chunked": 512, "continuous": context or 2048, "static": MAX_SIZE}[scheduler]


DEFAULT_SWAP_SPACE_GIB = 4.0  # vLLM's default swap space per device


def swap_space_bytes(preemption: str, gib: float | None) -> int:
    """Host bytes for swapped KV blocks: ``gib`` GiB (default :data:`DEFAULT_SWAP_SPACE_GIB`) under swap
    preemption; none under recompute, where a swap space is refused."""
    from workloads.errors import InputError

    check_swap_space(preemption, gib is not None)
    if preemption != "swap":
        return 0
    space = DEFAULT_SWAP_SPACE_GIB if gib is None else gib
    if not 0 < space <= 2**32:  # GiB: 4 EiB at most (the byte count stays an int64)
        raise InputError(f"--swap-space must be a positive number of GiB, got {space}")
    return int(space * 2**30)


def check_swap_space(preemption: str, given: bool) -> None:
    """Refuse a swap space ``given`` where nothing is swapped (recompute preemption)."""
    from workloads.errors import InputError

    if preemption != "swap" and given:
        raise InputError("--swap-space applies with --preemption swap")
