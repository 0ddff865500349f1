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
