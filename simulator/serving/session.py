"""A serving run put together: the model's KV blocks and the cache's capacity, the iteration coster and
the loop (pure: no I/O).

One KV block holds ``block_tokens`` tokens of every layer's keys and values at their stored format and
scales: the cache a prefill of ``block_tokens`` tokens writes. The cache's capacity is what the chip's
DRAM has left after the stored weights and the activations of the largest iteration the scheduler plans
(a prefill of ``max_tokens`` tokens, at most the model's context), in whole blocks; a chip without a
stated DRAM capacity holds every request's cache at once.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from simulator.engine import Simulator
from simulator.serving.defaults import check_swap_space
from simulator.serving.iteration import IterationCoster
from simulator.serving.kv_cache import PagedKVCache
from simulator.serving.metrics import check_slo, iteration_rows, request_rows
from simulator.serving.metrics import summary as summarize
from simulator.serving.prefetch import prefetched
from simulator.serving.requests import Request
from simulator.serving.schedulers import SCHEDULERS
from simulator.serving.server import Served, ServeSettings, serve
from simulator.serving.swap import PREEMPTIONS, SwapLink
from simulator.spec.system import check_plan
from workloads.errors import InputError
from workloads.models import FAMILIES, ModelSpec, Workload


@dataclass(frozen=True)
class Serving:
    served: Served
    clock_hz: float
    weight_bytes: int
    block_bytes: int
    energy_modelled: bool
    costed: dict[str, int]  # iterations costed each way (IterationCoster.counts)


@contextmanager
def _cycles_uncollected() -> Iterator[None]:
    """Python's cycle collector paused (and resumed after): the serving loop leaves no cyclic garbage (none in
    the benchmark's runs), and scanning the records it grows took an eighth of a long run's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run_serving(spec: ModelSpec, simulator: Simulator, requests: list[Request], settings: ServeSettings,
                block_tokens: int, progress: Callable[[int], None] | None = None,
                coster: IterationCoster | None = None) -> Serving:
    """Serve ``requests`` on ``simulator``'s chip (see the module docstring and :mod:`.server`); ``coster``
    (of the same model and simulator) carries iteration costs over from earlier runs."""
    _check_settings(settings, block_tokens)
    check_servable(spec)
    check_plan(simulator.system, simulator.hardware.name, spec.tp or 1)
    context = int(spec.config.get("max_position_embeddings", 0)) or None
    if context is not None and block_tokens > context:  # a block is priced as the cache a prefill of it writes
        raise InputError(f"--kv-block-size {block_tokens} exceeds {spec.name}'s context of {context} tokens (a "
                         "block holds at most one sequence's whole cache)")
    hardware = simulator.hardware
    clock_hz = hardware.array.clock_mhz * 1e6
    _check_requests(requests, settings, spec.name, context, clock_hz)
    workload = Workload(tokens=block_tokens, phase="prefill", expert_imbalance=settings.expert_imbalance)
    block = simulator.prepare(spec.trace(workload)).footprint
    link = _swap_link(simulator, settings, block.state_bytes, spec.tp or 1)
    window = _window(spec)
    capacity_bytes = hardware.memory.dram_capacity_bytes
    if capacity_bytes is None:
        probe = PagedKVCache(1, block_tokens, window)
        capacity = max(sum(probe.blocks_for(r.final_tokens, r.samples, r.prompt_tokens) for r in requests), 1)
    else:
        largest = simulator.prepare(spec.trace(Workload(tokens=min(settings.max_tokens, context or settings.max_tokens),
                                                        phase="prefill", logits_to_keep=1,
                                                        expert_imbalance=settings.expert_imbalance))).footprint
        capacity = (capacity_bytes - largest.weight_bytes - largest.peak_activation_bytes) // max(block.state_bytes, 1)
        if capacity < 1:
            raise InputError(f"{spec.name} on {hardware.name}: the weights ({largest.weight_bytes:,} bytes) and an "
                             f"iteration's activations ({largest.peak_activation_bytes:,} bytes) leave no room for "
                             f"a KV block of {block.state_bytes:,} bytes in {capacity_bytes:,} bytes of DRAM")
    kv = PagedKVCache(capacity, block_tokens, window)
    coster = coster or IterationCoster(spec, simulator)
    ordered = sorted(requests, key=lambda r: (r.arrival_s, r.request_id))
    prompts = [r.prompt_tokens for r in ordered] if settings.scheduler == "continuous" else []
    with _cycles_uncollected(), prefetched(coster, prompts, settings.expert_imbalance):
        served = serve(ordered, coster, kv, settings, clock_hz, progress, link)
    return Serving(served, clock_hz, block.weight_bytes, block.state_bytes, hardware.energy is not None, coster.counts)


def check_servable(spec: ModelSpec) -> None:
    """Refuse a model serving cannot run: one that does not generate text, or whose family builds no mixed
    batch (every iteration is one, whatever its requests)."""
    if "lm" not in spec.family.heads or not spec.family.phases:
        raise InputError(f"{spec.name} does not generate text: serving needs a decoder with an LM head")
    if not spec.family.mixed_batches:
        served = ", ".join(name for name, family in FAMILIES.items() if family.mixed_batches)
        raise InputError(f"{spec.name}: {spec.config['model_type']} models cannot be served: serving runs mixed "
                         f"batches of sequences, which these families build: {served}")


def _check_requests(requests: list[Request], settings: ServeSettings, model: str, context: int | None,
                    clock_hz: float) -> None:
    """Each request can run: its parallel sequences within ``max_batch``, its generation within the model's
    ``context``, its arrival a count of the chip's cycles; and there is one at least."""
    if not requests:
        raise InputError("no requests to serve")
    for request in requests:
        name = f"request {request.request_id}"
        if request.samples > settings.max_batch:
            raise InputError(f"{name}: its {request.samples} parallel sequences never run within --max-batch "
                             f"{settings.max_batch}")
        total = request.final_tokens
        if context is not None and total > context:
            raise InputError(f"{name}: {request.prompt_tokens} prompt tokens and {request.output_tokens} output "
                             f"tokens need a context of {total}, more than {model}'s {context} positions")
        if not math.isfinite(request.arrival_s * clock_hz):
            raise InputError(f"{name}: an arrival at {request.arrival_s:g} s is past what the chip's clock "
                             f"({clock_hz / 1e6:g} MHz) counts in cycles")


def _check_settings(settings: ServeSettings, block_tokens: int) -> None:
    if settings.scheduler not in SCHEDULERS:
        raise InputError(f"unknown scheduler {settings.scheduler!r}; choose from {', '.join(SCHEDULERS)}")
    for name, value in (("--max-batch", settings.max_batch), ("--max-tokens", settings.max_tokens),
                        ("--kv-block-size", block_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if settings.scheduler == "chunked" and settings.max_batch > settings.max_tokens:
        raise InputError(f"--max-batch {settings.max_batch} exceeds --max-tokens {settings.max_tokens}: under chunked "
                         "prefill every running sequence's decode token comes out of the token budget (vLLM refuses "
                         "this too)")
    if settings.preemption not in PREEMPTIONS:
        raise InputError(f"unknown preemption {settings.preemption!r}; choose from {', '.join(PREEMPTIONS)}")
    check_swap_space(settings.preemption, settings.swap_space_bytes != 0)


def _swap_link(simulator: Simulator, settings: ServeSettings, block_bytes: int, chips: int) -> SwapLink | None:
    """The host link's costs under swap preemption (refused where it cannot apply); None under recompute."""
    if settings.preemption != "swap":
        return None
    hardware = simulator.hardware
    if settings.scheduler == "static":
        raise InputError("--preemption swap does not apply to the static scheduler: it reserves every request's "
                         "blocks up front and never preempts")
    if hardware.host_link is None:
        raise InputError(f"--preemption swap needs the chip's link to its host: {hardware.name} states no host_link")
    if settings.swap_space_bytes < block_bytes:
        raise InputError(f"--swap-space of {settings.swap_space_bytes:,} bytes holds no KV block of "
                         f"{block_bytes:,} bytes")
    return SwapLink(block_bytes, hardware.host_link.gb_per_s * 1e9, hardware.host_link.pj_per_bit, chips)


def _window(spec: ModelSpec) -> int | None:
    """The sliding window every block keeps, if any (a model mixing windowed and full blocks keeps
    everything in its full ones)."""
    from workloads.families.llama import layer_windows

    windows = set(layer_windows(spec.config)) if spec.config["model_type"] in ("llama", "mistral", "qwen2",
                                                                               "mixtral") else {None}
    return windows.pop() if len(windows) == 1 else None


@dataclass(frozen=True)
class ServingRun:
    """One run's records and summary (request and iteration rows as the CSVs hold them)."""

    serving: Serving
    requests: list[dict[str, Any]]
    iterations: list[dict[str, Any]]
    summary: dict[str, Any]


class ServingRunner:
    """Runs of one model, chip, policy and scheduler on different requests, sharing iteration costs."""

    def __init__(self, spec: ModelSpec, simulator: Simulator, settings: ServeSettings, block_tokens: int, config: str,
                 notes: tuple[str, ...] = ()) -> None:
        self.spec, self.simulator, self.settings, self.block_tokens = spec, simulator, settings, block_tokens
        self.config, self.notes = config, notes
        check_servable(spec)
        self.coster = IterationCoster(spec, simulator)
        system = simulator.system
        self.hardware = system.name if system is not None else simulator.hardware.name
        self.title = f"{spec.name} under {config} on {self.hardware}, {settings.scheduler} scheduler"

    def run(self, requests: list[Request], slo: dict[str, float] | None,
            progress: Callable[[int], None] | None = None) -> ServingRun:
        """Serve ``requests``; goodput counts the requests that meet ``slo`` (milliseconds by metric, see
        :func:`~simulator.serving.metrics.check_slo`)."""
        slo = check_slo(slo) if slo is not None else None
        serving = run_serving(self.spec, self.simulator, requests, self.settings, self.block_tokens, progress,
                              self.coster)
        rows = request_rows(serving.served, serving.clock_hz)
        settings = self.settings
        summary: dict[str, Any] = {
            "model": self.spec.name, "config": self.config, "hardware": self.hardware,
            **({"chip": self.simulator.hardware.name, "chips": self.spec.tp or 1, "parallel": {"tp": self.spec.tp or 1}}
               if self.simulator.system is not None else {}),
            "scheduler": settings.scheduler, "max_batch": settings.max_batch, "max_tokens": settings.max_tokens,
            "preemption": settings.preemption,
            **({"swap_space_bytes": settings.swap_space_bytes} if settings.preemption == "swap" else {}),
            "kv_block_tokens": self.block_tokens, "kv_block_bytes": serving.block_bytes,
            "weight_bytes": serving.weight_bytes,
            **summarize(serving.served, rows, serving.clock_hz, slo, serving.energy_modelled),
            "notes": [*self.notes, *self.simulator.notes],
        }
        return ServingRun(serving, rows, iteration_rows(serving.served, serving.clock_hz), summary)
