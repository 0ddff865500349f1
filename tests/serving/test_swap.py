"""Swap-to-host preemption: nothing recomputed, the copies priced over the host link, its limits refused."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from conftest import preset_with
from test_serving import MODEL, small_dram

from simulator.energy.accounting import leakage_mw
from simulator.engine import Simulator
from simulator.serving.metrics import request_rows
from simulator.serving.requests import Lengths, Request, generate_requests
from simulator.serving.server import IterationRow, ServeSettings
from simulator.serving.session import Serving, run_serving
from simulator.serving.swap import HostSpace, SwapLink
from simulator.spec.hardware import Hardware, load_hardware
from simulator.spec.run_config import load_run_config
from workloads.errors import InputError
from workloads.models import load_model

GIB = 2**30
STATIC_MW = leakage_mw(Simulator(load_hardware("tpu_v5e_like"), load_run_config("configs/int8.yaml")).costs)


def swapped(requests: list[Request], scheduler: str, chip: Hardware, space: int = GIB,
            preemption: str = "swap") -> tuple[Serving, list[dict[str, Any]]]:
    simulator = Simulator(chip, load_run_config("configs/int8.yaml"))
    settings = ServeSettings(scheduler, 64, 128, None, preemption, space if preemption == "swap" else 0)
    serving = run_serving(load_model(MODEL), simulator, requests, settings, 16)
    return serving, request_rows(serving.served, serving.clock_hz)


def crowd(rate: float | None = 200.0) -> list[Request]:
    return generate_requests(40, rate, Lengths("uniform", (8, 120)), Lengths("uniform", (40, 130)), 5)


@pytest.mark.parametrize("scheduler", ["continuous", "chunked"])
def test_swapped_sequences_resume_without_recomputing(scheduler: str) -> None:
    """Under swap preemption every preemption swaps, every request finishes once with its tokens, and the
    prefills compute each prompt exactly once (recompute preemption computes more)."""
    requests = crowd()
    serving, rows = swapped(requests, scheduler, small_dram(16, 128))
    iterations = serving.served.iterations
    assert sum(row["swaps"] for row in rows) == sum(row["preemptions"] for row in rows) > 0
    assert sorted(row["request_id"] for row in rows) == [r.request_id for r in requests]
    assert sum(row.emitted for row in iterations) == sum(r.output_tokens for r in requests)
    assert sum(row.prefill_tokens for row in iterations) == sum(r.prompt_tokens for r in requests)
    assert all(row.kv_blocks <= 16 for row in iterations)
    assert 0 < (serving.served.host_peak or 0) <= GIB // serving.block_bytes
    moved = sum(row.swapped_blocks for row in iterations)
    assert moved % 2 == 0 and moved > 0  # every block swapped out comes back
    recomputed, rows_recompute = swapped(requests, scheduler, small_dram(16, 128), preemption="recompute")
    assert sum(row["swaps"] for row in rows_recompute) == 0 < sum(row["preemptions"] for row in rows_recompute)
    assert sum(row.prefill_tokens for row in recomputed.served.iterations) > sum(r.prompt_tokens for r in requests)


@pytest.mark.parametrize("scheduler", ["continuous", "chunked"])
def test_a_copy_costs_its_bytes_over_the_host_link(scheduler: str) -> None:
    """All requests at time 0: the schedule does not depend on time, so runs over host links of different
    bandwidth and energy plan the same iterations, and each iteration's time and energy differ by exactly
    its copies' bytes over the link (ceil to whole cycles) and x 8 x pJ/bit, plus the chip's leakage over
    the time the copies add."""
    chip = small_dram(16, 128)
    fast = preset_with(chip, host_link={"gb_per_s": 64.0, "pj_per_bit": 5.0})
    slow = preset_with(chip, host_link={"gb_per_s": 8.0, "pj_per_bit": 20.0})
    runs = [swapped(crowd(None), scheduler, hardware)[0] for hardware in (fast, slow)]
    block, clock = runs[0].block_bytes, runs[0].clock_hz
    links = [SwapLink(block, 64e9, 5.0), SwapLink(block, 8e9, 20.0)]
    pairs = list(zip(runs[0].served.iterations, runs[1].served.iterations, strict=True))
    assert any(a.swapped_blocks for a, _ in pairs)
    for a, b in pairs:
        assert replace(a, start=0, cycles=0, energy_pj=0) == replace(b, start=0, cycles=0, energy_pj=0)
        blocks = a.swapped_blocks
        assert b.cycles - a.cycles == links[1].cycles(blocks, clock) - links[0].cycles(blocks, clock)
        leaked = STATIC_MW * (b.cycles - a.cycles) / clock * 1e9
        assert b.energy_pj - a.energy_pj == pytest.approx(blocks * block * 8 * (20.0 - 5.0) + leaked, rel=1e-9,
                                                          abs=1e-3)


def test_link_closed_forms() -> None:
    link = SwapLink(block_bytes=4 << 20, bytes_per_s=31.5e9, pj_per_bit=5.0, chips=8)
    assert link.cycles(3, 1.5e9) == -(-3 * (4 << 20) * 1.5e9 // 31.5e9)
    assert link.cycles(0, 1.5e9) == 0
    assert link.energy_pj(3) == 3 * (4 << 20) * 8 * 5.0 * 8


def test_a_full_swap_space_ends_the_run_in_one_line() -> None:
    with pytest.raises(InputError, match=r"the host swap space \(\d[\d,]* bytes, 1 KV blocks\) has no room"):
        swapped(crowd(), "continuous", small_dram(16, 128), space=small_block_bytes())


def small_block_bytes() -> int:
    """Bytes of one KV block of the test model (a swap space of exactly one block)."""
    serving, _ = swapped([Request(0, 0.0, 4, 1)], "continuous", small_dram(16, 128), preemption="recompute")
    return serving.block_bytes


def test_swap_space_and_token_budget_defaults() -> None:
    from simulator.serving.defaults import default_max_tokens, swap_space_bytes
    from workloads.ops import MAX_SIZE

    assert swap_space_bytes("recompute", None) == 0
    assert swap_space_bytes("swap", None) == 4 * GIB  # vLLM's default
    assert swap_space_bytes("swap", 0.5) == GIB // 2
    assert swap_space_bytes("swap", 2.0**32) == 2**62
    for bad in (0.0, -1.0, 2.0**32 + 1):
        with pytest.raises(InputError, match="--swap-space must be a positive number of GiB"):
            swap_space_bytes("swap", bad)
    assert (default_max_tokens("chunked", 4096), default_max_tokens("continuous", 4096),
            default_max_tokens("continuous", None), default_max_tokens("static", 4096)) == (512, 4096, 2048, MAX_SIZE)


def test_host_space_counts_blocks_in_and_out() -> None:
    space = HostSpace(capacity=4, space_bytes=400)
    space.take(1)
    space.take(2)
    assert space.used == 3
    with pytest.raises(InputError, match="no room for a preempted sequence's 2 blocks"):
        space.take(2)
    space.take(1)  # exactly what is left
    space.give_back(1)
    assert (space.used, space.peak) == (3, 4)


def test_swapped_prefills_stop_when_the_token_budget_is_spent() -> None:
    """Chunked prefill swaps sequences back in while its token budget lasts: one that finds it spent stays
    swapped out (it used to be planned with no tokens, and the iteration ended the run in an error)."""
    from collections import deque

    from simulator.serving.kv_cache import PagedKVCache
    from simulator.serving.schedulers import Active, Queue, _swap_in

    queue = Queue(deque(), [], PagedKVCache(100, 16), HostSpace(100, 100 * 1024))
    first, second = (Active(Request(n, 0.0, 100, 5), 100, computed) for n, computed in ((0, 40), (1, 30)))
    for active in (first, second):
        active.swapped_blocks = 3
        queue.host.take(3)  # type: ignore[union-attr]
        queue.swapped.append(active)
    assert _swap_in(queue, 64, 60) == [(first, 60)]
    assert queue.swapped == [second] and queue.running == [first] and queue.copied_blocks == 3
    queue.running.clear()
    queue.swapped[:] = [first, second]
    first.swapped_blocks, first.computed = 3, 40
    assert _swap_in(queue, 64, 61) == [(first, 60), (second, 1)]  # the last token of the budget is a chunk
    assert queue.swapped == [] and queue.copied_blocks == 3 + 3 + 3
    assert queue.kv.held == {id(first): 7, id(second): 2}  # 16-token blocks of 100 and 31 cached tokens


def test_chunked_swap_under_a_tight_budget_serves_every_request() -> None:
    """The run that found it: chunked prefill with swap preemption, whose budget a swapped prompt's chunk
    spends to the last token."""
    requests = generate_requests(60, None, Lengths("uniform", (40, 200)), Lengths("uniform", (20, 80)), 1)
    simulator = Simulator(small_dram(16, 128), load_run_config("configs/int8.yaml"))
    settings = ServeSettings("chunked", 32, 32, None, "swap", GIB)
    serving = run_serving(load_model(MODEL), simulator, requests, settings, 16)
    assert sum(row.emitted for row in serving.served.iterations) == sum(r.output_tokens for r in requests)
    assert sum(row.prefill_tokens for row in serving.served.iterations) == sum(r.prompt_tokens for r in requests)


@pytest.mark.parametrize("scheduler", ["continuous", "chunked"])
def test_a_lone_swapped_sequence_pays_for_its_copies_in_an_iteration_of_its_own(scheduler: str) -> None:
    """A generation needing every block of the cache swaps itself out at its decode (no block free) and back
    in: the swap-out is an iteration of copies alone, priced over the link (it ended the run in an internal
    error); every block swapped out comes back."""
    chip = small_dram(8, 128)
    serving, rows = swapped([Request(0, 0.0, 100, 29)], scheduler, chip)
    copies = [row for row in serving.served.iterations if not row.emitted and not row.prefill_tokens]
    assert rows[0]["swaps"] == len(copies) > 0 and all(row.swapped_blocks == 8 for row in copies)
    assert chip.host_link is not None
    link = SwapLink(serving.block_bytes, chip.host_link.gb_per_s * 1e9, chip.host_link.pj_per_bit)
    cycles = link.cycles(8, serving.clock_hz)
    iterations = serving.served.iterations
    for before, row in zip(iterations, iterations[1:], strict=False):  # the lone sequence is out: 0 blocks held
        assert row.start == before.start + before.cycles  # no idle time: one request, at time 0
        if row in copies:
            assert row == IterationRow(before.start + before.cycles, cycles, 0, 0, 0, 0, 0, row.energy_pj, 8)
    assert all(row.energy_pj == pytest.approx(link.energy_pj(8) + STATIC_MW * cycles / serving.clock_hz * 1e9,
                                              rel=1e-12) for row in copies)
    assert sum(row.swapped_blocks for row in serving.served.iterations) == 2 * 8 * len(copies)
    assert sum(row.emitted for row in serving.served.iterations) == 29


def test_copies_closed_form() -> None:
    """No copies cost nothing; copies cost the link's time and energy and the chips' leakage meanwhile."""
    from simulator.serving.server import _copies

    link = SwapLink(block_bytes=1 << 20, bytes_per_s=16e9, pj_per_bit=10.0, chips=2)
    assert _copies(0, None, 1e9, 5000.0) == (0, 0.0)
    cycles = -(-3 * (1 << 20) * 1e9 // 16e9)
    assert _copies(3, link, 1e9, 5000.0) == (cycles, 3 * (1 << 20) * 8 * 10.0 * 2 + 5000.0 * cycles / 1e9 * 1e9)
