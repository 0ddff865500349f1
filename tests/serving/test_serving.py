"""Serving runs: equal to ``generate`` where they are one, conservation, the schedulers' rules, queueing
closed forms (Little's law, M/D/1) and a paged KV cache that runs out."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import ROOT, TESTS
from conftest import preset_with

from simulator.analysis.generation import generate, generation_summary
from simulator.engine import Simulator
from simulator.serving.metrics import iteration_rows, request_rows, summary
from simulator.serving.requests import Lengths, Request, generate_requests
from simulator.serving.server import ServeSettings
from simulator.serving.session import Serving, run_serving
from simulator.spec.hardware import Hardware, load_hardware
from simulator.spec.run_config import load_run_config
from workloads.errors import InputError
from workloads.models import Workload, load_model

MODEL = str(TESTS / "configs" / "llama-serve-6.json")


def served(requests: list[Request], scheduler: str = "continuous", *, model: str = MODEL, config: str = "int8",
           hardware: str | Hardware = "tpu_v5e_like", max_batch: int = 64, max_tokens: int = 512,
           block: int = 16) -> tuple[Serving, list[dict[str, Any]]]:
    chip = load_hardware(hardware) if isinstance(hardware, str) else hardware
    simulator = Simulator(chip, load_run_config(f"configs/{config}.yaml"))
    settings = ServeSettings(scheduler, max_batch, max_tokens)
    serving = run_serving(load_model(model), simulator, requests, settings, block)
    return serving, request_rows(serving.served, serving.clock_hz)


@pytest.mark.parametrize("model, prompt, new", [(MODEL, 37, 9), ("llama-2-7b", 128, 6),
                                                (str(TESTS / "configs" / "opt-serve-post-ln-6.json"), 37, 9)])
@pytest.mark.parametrize("scheduler", ["static", "continuous", "chunked"])
def test_one_request_is_generate(model: str, prompt: int, new: int, scheduler: str) -> None:
    """Alone, a request's TTFT and TPOT are generate's, exactly (chunked: its prompt in one chunk)."""
    chip = load_hardware("tpu_v5e_like")
    simulator = Simulator(chip, load_run_config("configs/int8.yaml"))
    spec = load_model(model)
    expected = generation_summary(generate(spec, Workload(tokens=prompt), new, simulator), chip)
    _, rows = served([Request(0, 0.0, prompt, new)], scheduler, model=model)
    assert rows[0]["ttft_ms"] == expected["ttft_ms"]
    assert rows[0]["tpot_ms"] == expected["tpot_ms"]
    assert rows[0]["e2e_ms"] == pytest.approx(expected["e2e_ms"], rel=1e-12)


def test_identical_requests_in_a_static_batch_are_generate_at_that_batch() -> None:
    chip = load_hardware("tpu_v5e_like")
    simulator = Simulator(chip, load_run_config("configs/int8.yaml"))
    expected = generation_summary(generate(load_model(MODEL), Workload(batch=5, tokens=40), 12, simulator), chip)
    _, rows = served([Request(i, 0.0, 40, 12) for i in range(5)], "static")
    assert {row["ttft_ms"] for row in rows} == {expected["ttft_ms"]}
    assert {row["tpot_ms"] for row in rows} == {expected["tpot_ms"]}


def run_with_rates(scheduler: str, count: int = 60, rate: float = 40.0, **kwargs: Any
                   ) -> tuple[Serving, list[dict[str, Any]], list[Request]]:
    requests = generate_requests(count, rate, Lengths("uniform", (8, 120)), Lengths("uniform", (1, 40)), 3)
    serving, rows = served(requests, scheduler, **kwargs)
    return serving, rows, requests


@pytest.mark.parametrize("scheduler", ["static", "continuous", "chunked"])
def test_conservation(scheduler: str) -> None:
    """Every request finishes once, after it arrived and after its first token; the tokens emitted are the
    outputs asked for; blocks in use stay within the cache and return to zero; iterations never overlap."""
    serving, rows, requests = run_with_rates(scheduler)
    assert sorted(row["request_id"] for row in rows) == [r.request_id for r in requests]
    iterations = serving.served.iterations
    assert sum(row.emitted for row in iterations) == sum(r.output_tokens for r in requests)
    assert sum(row.prefill_tokens for row in iterations) >= sum(r.prompt_tokens for r in requests)
    for row in rows:
        assert row["arrival_s"] <= row["first_scheduled_s"] <= row["first_token_s"] <= row["finish_s"] + 1e-12
    assert all(0 <= row.kv_blocks <= serving.served.kv_capacity for row in iterations)
    assert serving.served.kv_peak <= serving.served.kv_capacity
    for before, after in zip(iterations, iterations[1:], strict=False):
        assert after.start >= before.start + before.cycles
    energy = sum(row["energy_j"] for row in rows)
    assert energy == pytest.approx(sum(row.energy_pj for row in iterations) * 1e-12, rel=1e-9)


def test_scheduler_rules() -> None:
    """continuous: an iteration prefills or decodes, never both; chunked: decodes and chunks within the
    token budget; static: no request joins a batch until the last of it finished."""
    serving, _, _ = run_with_rates("continuous")
    assert all(not (row.prefill_sequences and row.decode_sequences) for row in serving.served.iterations)
    serving, _, _ = run_with_rates("chunked", max_tokens=64)
    assert all(row.prefill_tokens + row.decode_sequences <= 64 for row in serving.served.iterations)
    assert any(row.prefill_sequences and row.decode_sequences for row in serving.served.iterations)
    serving, rows, _ = run_with_rates("static", max_batch=4)
    batches: dict[float, list[dict[str, Any]]] = {}
    for row in rows:
        batches.setdefault(row["first_scheduled_s"], []).append(row)
    starts = sorted(batches)
    for earlier, later in zip(starts, starts[1:], strict=False):
        assert later >= max(row["finish_s"] for row in batches[earlier])
        assert len(batches[earlier]) <= 4


def test_littles_law() -> None:
    """Mean requests in the system over the arrivals' span (the time each spends there, clipped to it, over
    its length) equals the Poisson rate times the mean time in the system, within sampling error (1,000
    arrivals: about 3%), under load (about 2.6 requests in the system)."""
    rate = 5000.0
    _, rows, requests = run_with_rates("continuous", count=1000, rate=rate)
    span = max(r.arrival_s for r in requests)
    in_system = sum(max(0.0, min(row["finish_s"], span) - row["arrival_s"]) for row in rows) / span
    time_in_system = sum(row["e2e_ms"] for row in rows) / 1e3 / len(rows)
    assert rate * time_in_system > 2
    assert in_system == pytest.approx(rate * time_in_system, rel=0.1)


def test_queueing_delay_is_md1_at_low_load() -> None:
    """One request at a time (static batches of one) of identical requests: a single server with a
    deterministic service time D, so the mean wait in queue is rho D / (2 (1 - rho)), rho = rate x D."""
    single = [Request(0, 0.0, 20, 3)]
    service = served(single, "static", max_batch=1)[1][0]["e2e_ms"] / 1e3
    rho = 0.5
    requests = generate_requests(3000, rho / service, Lengths("fixed", (20,)), Lengths("fixed", (3,)), 11)
    _, rows = served(requests, "static", max_batch=1)
    waiting = sum(row["queueing_ms"] for row in rows) / len(rows) / 1e3
    assert waiting == pytest.approx(rho * service / (2 * (1 - rho)), rel=0.15)


def small_dram(blocks: int, max_tokens: int = 512) -> Hardware:
    """tpu_v5e_like whose DRAM holds the test model's weights, its largest iteration (``max_tokens``) and
    ``blocks`` KV blocks."""
    chip = load_hardware("tpu_v5e_like")
    probe = served([Request(0, 0.0, 4, 1)], hardware=chip, max_tokens=max_tokens)[0]
    spare = chip.memory.dram_capacity_bytes - probe.served.kv_capacity * probe.block_bytes
    return preset_with(chip, memory={"dram_capacity_bytes": spare + blocks * probe.block_bytes})


def small_dram_preset(directory: Path, blocks: int) -> Path:
    """:func:`small_dram` as a preset file named tpu_small, for the command line."""
    capacity = small_dram(blocks).memory.dram_capacity_bytes
    preset = (ROOT / "configs" / "hardware" / "tpu_v5e_like.yaml").read_text()
    path = directory / "tpu_small.yaml"
    path.write_text(re.sub(r"dram_capacity_bytes: *\d+", f"dram_capacity_bytes: {capacity}", preset)
                    .replace("name: tpu_v5e_like", "name: tpu_small"))
    return path


@pytest.mark.parametrize("scheduler", ["continuous", "chunked"])
def test_a_full_cache_preempts_and_every_request_still_finishes(scheduler: str) -> None:
    requests = generate_requests(40, 200.0, Lengths("uniform", (8, 120)), Lengths("uniform", (40, 130)), 5)
    serving, rows = served(requests, scheduler, hardware=small_dram(16, 128), max_tokens=128)
    assert serving.served.kv_capacity == 16
    assert sum(row["preemptions"] for row in rows) > 0
    assert len(rows) + len(serving.served.rejected) == len(requests)
    assert all(row.kv_blocks <= 16 for row in serving.served.iterations)
    assert sum(row.emitted for row in serving.served.iterations) == sum(r.output_tokens for r in requests
                                                                        if r not in serving.served.rejected)


def test_a_request_that_fills_the_context_exactly_is_served() -> None:
    """500 prompt tokens and 13 output tokens cache 512 entries, the test model's context: served."""
    serving, rows = served([Request(0, 0.0, 500, 13)])
    assert rows[0]["output_tokens"] == 13 and not serving.served.rejected
    with pytest.raises(InputError, match="need a context of 513, more than llama-serve-6's 512 positions"):
        served([Request(0, 0.0, 500, 14)])


def test_a_kv_block_as_long_as_the_context_is_served_and_a_longer_one_refused() -> None:
    """A block is priced as the cache a prefill of its tokens writes: up to the context (512 here), one block
    holding a whole sequence's cache; past it, refused naming the option."""
    serving, rows = served([Request(0, 0.0, 40, 5), Request(1, 0.0, 30, 4)], block=512)
    assert len(rows) == 2 and serving.served.kv_peak == 2  # one block per sequence
    with pytest.raises(InputError, match=r"^--kv-block-size 513 exceeds llama-serve-6's context of 512 tokens \(a "
                                         r"block holds at most one sequence's whole cache\)$"):
        served([Request(0, 0.0, 40, 5)], block=513)


def test_a_request_that_never_fits_is_rejected() -> None:
    requests = [Request(0, 0.0, 30, 5), Request(1, 0.0, 400, 50), Request(2, 0.1, 10, 2)]
    serving, rows = served(requests, hardware=small_dram(8))
    assert [r.request_id for r in serving.served.rejected] == [1]
    result = summary(serving.served, rows, serving.clock_hz, None, True)
    assert (result["requests"], result["completed"], result["rejected"]) == (3, 2, 1)
    assert result["rejected_request_ids"] == [1]
    from simulator.report.serving import format_serving

    text = format_serving({**result, "model": "m", "config": "c", "hardware": "h", "scheduler": "continuous",
                           "kv_block_tokens": 16, "notes": []})
    assert "\n  rejected        request 1: their generations never fit the KV cache\n" in text


@pytest.mark.parametrize("scheduler", ["static", "continuous", "chunked"])
def test_a_run_whose_last_requests_are_rejected_ends_when_the_others_finish(scheduler: str) -> None:
    """The rejected arrive after the others have finished: nothing is left to serve (the loop used to stop
    there with an internal error)."""
    requests = [Request(0, 0.0, 30, 5), Request(1, 1.0, 400, 50), Request(2, 1.0, 300, 60)]
    serving, rows = served(requests, scheduler, hardware=small_dram(8))
    assert [r.request_id for r in serving.served.rejected] == [1, 2]
    assert [row["request_id"] for row in rows] == [0]
    assert serving.served.end == rows[0]["finish_s"] * serving.clock_hz < serving.clock_hz


@pytest.mark.parametrize("scheduler", ["continuous", "chunked"])
def test_a_lone_request_that_fills_the_cache_is_recomputed_at_once(scheduler: str) -> None:
    """A generation needing every block of the cache: its decode finds no block free (vLLM's rule), so it is
    preempted and recomputed, over and over, and finishes. The replanning is immediate: it used to wait
    idle for the next arrival (here 5 s later), or end the run in an internal error without one."""
    serving, rows = served([Request(0, 0.0, 100, 29), Request(1, 5.0, 4, 2)], scheduler,
                           hardware=small_dram(8, 128), max_tokens=128)
    assert serving.served.kv_capacity == 8 and rows[0]["preemptions"] > 0
    assert rows[0]["finish_s"] < 0.1 and rows[1]["finish_s"] > 5.0
    iterations = serving.served.iterations
    assert sum(row.emitted for row in iterations) == 29 + 2
    assert all(b.start >= a.start + a.cycles for a, b in zip(iterations, iterations[1:], strict=False))


def test_a_sampled_request_that_fits_by_sharing_its_prompt_is_served() -> None:
    """Three samples of a 64-token prompt and 17 output tokens hold 4 shared blocks and 1 each: 7 of a cache
    of 8 (15 if each kept its own copy of the prompt)."""
    serving, rows = served([Request(0, 0.0, 64, 17, samples=3)], hardware=small_dram(8))
    assert serving.served.kv_capacity == 8 and not serving.served.rejected
    assert serving.served.kv_peak == 7 and rows[0]["preemptions"] == 0


def test_idle_time_between_requests_leaks_the_chips_static_power() -> None:
    """Three requests a second apart: the chip idles between them; the run's idle energy is its static power
    over every cycle no iteration ran."""
    from simulator.energy.accounting import leakage_mw

    serving, _ = served([Request(0, 0.0, 30, 5), Request(1, 1.0, 20, 4), Request(2, 2.0, 10, 3)])
    served_run = serving.served
    idle_cycles = served_run.end - sum(row.cycles for row in served_run.iterations)
    assert idle_cycles > 1.99 * serving.clock_hz
    static_mw = leakage_mw(Simulator(load_hardware("tpu_v5e_like"), load_run_config("configs/int8.yaml")).costs)
    assert served_run.idle_energy_pj == pytest.approx(static_mw * idle_cycles / serving.clock_hz * 1e9, rel=1e-12)


def test_progress_is_told_of_each_completion_once() -> None:
    told: list[int] = []
    requests = [Request(i, 0.01 * i, 20 + i, 3 + i) for i in range(5)]
    simulator = Simulator(load_hardware("tpu_v5e_like"), load_run_config("configs/int8.yaml"))
    run_serving(load_model(MODEL), simulator, requests, ServeSettings("continuous", 64, 512), 16, told.append)
    assert told == [1] * 5


def test_a_mixture_of_experts_serves_at_its_routing_imbalance() -> None:
    """The routing imbalance reaches every iteration: the busiest expert runs more rows, and in these small
    batches fewer experts are read, so the same requests take a different time at imbalance 2."""
    model = str(TESTS / "configs" / "mixtral-window-8.json")
    chip = load_hardware("tpu_v5e_like")
    ends = []
    for imbalance in (None, 2.0):
        simulator = Simulator(chip, load_run_config("configs/int8.yaml"))
        run = run_serving(load_model(model), simulator, [Request(0, 0.0, 40, 6), Request(1, 0.0, 30, 6)],
                          ServeSettings("continuous", 64, 512, imbalance), 16)
        ends.append(run.served.end)
    assert ends[1] != ends[0]


def test_summary_goodput_and_energy() -> None:
    serving, rows, _ = run_with_rates("chunked")
    result = summary(serving.served, rows, serving.clock_hz, {"ttft": 5.0, "tpot": 1.0}, True)
    met = [row for row in rows if row["ttft_ms"] <= 5.0 and (math.isnan(row["tpot_ms"]) or row["tpot_ms"] <= 1.0)]
    assert result["goodput_requests_per_s"] == pytest.approx(len(met) / result["duration_s"])
    tokens = sum(row["output_tokens"] for row in rows)
    assert result["throughput_tokens_per_s"] == pytest.approx(tokens / result["duration_s"])
    assert result["energy_per_token_j"] == pytest.approx(result["energy_j"] / tokens)
    assert result["ttft_ms"]["p50"] <= result["ttft_ms"]["p90"] <= result["ttft_ms"]["p99"]
    assert len(iteration_rows(serving.served, serving.clock_hz)) == result["iterations"]


@pytest.mark.parametrize("scheduler", ["static", "continuous", "chunked"])
def test_parallel_samples_of_one_request_are_generate_with_beams(scheduler: str) -> None:
    """A request sampled four ways: its prefill runs once, its decode steps as four sequences with their
    own caches, exactly as generate's beams (each with its own copy of the cache after one prefill)."""
    chip = load_hardware("tpu_v5e_like")
    simulator = Simulator(chip, load_run_config("configs/int8.yaml"))
    expected = generation_summary(generate(load_model(MODEL), Workload(tokens=37), 9, simulator, beams=4), chip)
    serving, rows = served([Request(0, 0.0, 37, 9, samples=4)], scheduler)
    assert rows[0]["ttft_ms"] == expected["ttft_ms"] and rows[0]["tpot_ms"] == expected["tpot_ms"]
    assert sum(row.emitted for row in serving.served.iterations) == 4 * 9
    assert [row.decode_sequences for row in serving.served.iterations[1:]] == [4] * 8


@pytest.mark.parametrize("scheduler", ["static", "continuous", "chunked"])
def test_a_beam_search_is_generate_with_beams_and_returns_one_sequence(scheduler: str) -> None:
    """Four beams of one request: its steps are generate's beams, its blocks four samples', and it returns one
    sequence: one token emitted per step, a request's output tokens in the throughput."""
    from simulator.serving.requests import sampled

    chip = load_hardware("tpu_v5e_like")
    simulator = Simulator(chip, load_run_config("configs/int8.yaml"))
    expected = generation_summary(generate(load_model(MODEL), Workload(tokens=37), 9, simulator, beams=4), chip)
    (request,) = sampled([Request(0, 0.0, 37, 9)], beams=4)
    serving, rows = served([request], scheduler)
    assert rows[0]["ttft_ms"] == expected["ttft_ms"] and rows[0]["tpot_ms"] == expected["tpot_ms"]
    assert rows[0]["beam_search"] and rows[0]["samples"] == 4
    assert sum(row.emitted for row in serving.served.iterations) == 9
    assert [row.decode_sequences for row in serving.served.iterations[1:]] == [4] * 8
    result = summary(serving.served, rows, serving.clock_hz, None, True)
    assert result["throughput_tokens_per_s"] == pytest.approx(9 / result["duration_s"])
    with pytest.raises(InputError, match="either samples sequences or searches beams"):
        sampled([request], samples=2, beams=2)


def test_samples_share_their_prompts_blocks_and_are_never_preempted() -> None:
    """Sampled requests hold their whole generation from admission (the prompt's whole blocks once):
    under a small cache the single-sample requests are preempted, the sampled ones never."""
    requests = [Request(i, 0.0, 40 + i, 20 if i in (1, 5) else 90, samples=3 if i in (1, 5) else 1)
                for i in range(24)]
    serving, rows = served(requests, "continuous", hardware=small_dram(30, 128), max_tokens=128)
    assert serving.served.kv_capacity == 30
    assert all(row["preemptions"] == 0 for row in rows if row["samples"] == 3)
    assert sum(row["preemptions"] for row in rows) > 0
    assert all(row.kv_blocks <= 30 for row in serving.served.iterations)
    assert sum(row.emitted for row in serving.served.iterations) == sum(r.output_tokens * r.samples for r in requests)
    result = summary(serving.served, rows, serving.clock_hz, None, True)
    assert result["throughput_tokens_per_s"] == pytest.approx(sum(r.output_tokens * r.samples for r in requests)
                                                              / result["duration_s"])


@pytest.mark.parametrize("scheduler", ["static", "continuous", "chunked"])
def test_max_batch_and_the_token_budget_count_every_sampled_sequence(scheduler: str) -> None:
    """Requests sampling three sequences each, at most 7 sequences at once: two requests run together (six
    sequences), never three; under chunked prefill each decoding sample takes one token of the budget."""
    requests = [Request(i, 0.0, 20 + i, 12, samples=3) for i in range(6)]
    serving, _ = served(requests, scheduler, max_batch=7, max_tokens=24 if scheduler == "chunked" else 64)
    iterations = serving.served.iterations
    assert max(row.decode_sequences for row in iterations) == 6
    if scheduler == "chunked":
        assert all(row.prefill_tokens + row.decode_sequences <= 24 for row in iterations)
        assert any(row.prefill_tokens + row.decode_sequences == 24 for row in iterations)
    assert sum(row.emitted for row in iterations) == 6 * 3 * 12


def test_a_batch_limit_no_request_can_run_within_is_refused() -> None:
    with pytest.raises(InputError, match=r"^request 1: its 4 parallel sequences never run within --max-batch 3$"):
        served([Request(0, 0.0, 20, 5), Request(1, 0.0, 20, 5, samples=4)], max_batch=3)
    with pytest.raises(InputError, match=r"^--max-batch 65 exceeds --max-tokens 64: under chunked prefill"):
        served([Request(0, 0.0, 20, 5)], "chunked", max_batch=65, max_tokens=64)


@pytest.mark.parametrize("model", ["gpt2", "t5-3b"])
def test_a_model_without_mixed_batches_is_refused_before_anything_runs(model: str) -> None:
    """Every serving iteration is a mixed batch, which Llama-style decoders and OPT build: a runner (the
    sweeps') and a run refuse the others at once, naming the families that serve. Before, GPT-2 and T5
    failed inside (a KeyError)."""
    from simulator.serving.session import ServingRunner

    simulator = Simulator(load_hardware("tpu_v5e_like"), load_run_config("configs/int8.yaml"))
    settings = ServeSettings("static", 8, 512)
    with pytest.raises(InputError, match="models cannot be served: .* build: llama, qwen2, mistral, mixtral, opt$"):
        ServingRunner(load_model(model), simulator, settings, 16, "int8")
    requests = generate_requests(2, None, Lengths("fixed", (8,)), Lengths("fixed", (2,)), 0)
    with pytest.raises(InputError, match="models cannot be served"):
        run_serving(load_model(model), simulator, requests, settings, 16)


@pytest.mark.parametrize("settings, block_tokens, requests, needle", [
    (ServeSettings("continuous", 8.5, 512), 16, 1, "--max-batch must be a positive integer, got 8.5"),  # type: ignore[arg-type]
    (ServeSettings("continuous", 8, 512), 16.5, 1, "--kv-block-size must be a positive integer, got 16.5"),
    (ServeSettings("continuous", 8, 512, swap_space_bytes=2**30), 16, 1, "--swap-space applies with --preemption swap"),
    (ServeSettings("continuous", 8, 512), 16, 0, "no requests to serve")])
def test_settings_given_to_the_python_api_are_checked_as_the_options_are(settings, block_tokens, requests, needle):
    simulator = Simulator(load_hardware("tpu_v5e_like"), load_run_config("configs/int8.yaml"))
    with pytest.raises(InputError, match=needle):
        run_serving(load_model(MODEL), simulator, [Request(i, 0.0, 20, 3) for i in range(requests)], settings,
                    block_tokens)


def test_a_generation_is_summarised_with_the_chip_it_ran_on() -> None:
    chip = load_hardware("tpu_v5e_like")
    run = generate(load_model(MODEL), Workload(tokens=16), 3, Simulator(chip, load_run_config("configs/int8.yaml")))
    assert generation_summary(run, load_hardware("tpu_v5e_like"))["tpot_ms"] > 0
    with pytest.raises(InputError, match="this generation ran on tpu_v5e_like: summarise it with that chip, not "
                                         "rapid_like"):
        generation_summary(run, load_hardware("rapid_like"))
