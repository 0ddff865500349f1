"""Generation (prefill + decode steps): each step exactly what simulating it alone gives, and the
closed forms of a decode step that compute cannot hide."""

import itertools
from dataclasses import replace

import pandas as pd
import pytest
from cli_helpers import TESTS
from conftest import preset_with

from simulator.analysis.generation import generate, generation_summary
from simulator.engine import Simulator, simulate
from simulator.engine.records import ADDITIVE_COLUMNS
from simulator.spec.hardware import Hardware, load_hardware
from simulator.spec.run_config import load_run_config, policy_from_dict
from workloads.errors import InputError
from workloads.models import Workload, load_model

INT8 = load_run_config("configs/int8.yaml")
MISTRAL_W8 = str(TESTS / "configs" / "mistral-window-8.json")
FP16 = load_run_config("configs/fp16.yaml")
W8A8 = load_run_config("configs/w8a8.yaml")  # per-token scales: a probability row's scale group grows with the cache
PRUNED_ATTENTION = policy_from_dict({  # pruned rows grow with the cache: tails of 1..3 keys along them
    "name": "kv8_nm", "hardware": "rapid_like", "precision": {"default": "int8", "kv_cache": "int8"},
    "sparsity": {"attention": {"probabilities": "2:4", "keys": "1:8"}}})


def with_memory(preset: str, **memory) -> Hardware:
    return preset_with(preset, memory=memory)


def step_by_step(spec, workload, lengths, hardware, policy):
    """Each decode step simulated alone: per-step totals and per-op sums of the additive columns."""
    totals, per_op = [], None
    knob = spec.family.cache_knob
    for length in lengths:
        step = replace(workload, phase="decode", **{knob: length})
        res = simulate(spec.trace(step), hardware, policy)
        totals.append(res.totals["total_cycles"])
        counts = res[list(ADDITIVE_COLUMNS)].reset_index(drop=True)
        per_op = counts if per_op is None else per_op + counts
    return totals, per_op


@pytest.mark.parametrize(("model", "hardware", "policy", "batch", "prompt", "new"), [
    ("llama-3-8b", load_hardware("rapid_like"), INT8, 3, 40, 9),  # fusion on, grouped-query attention
    ("llama-2-7b", load_hardware("tpu_v1_like"), INT8, 2, 64, 6),
    ("gpt2", load_hardware("rapid_like"), INT8, 1, 50, 30),  # scores meet q's size at 63 cached tokens
    ("gpt2", with_memory("rapid_like", ifmap_buffer_bytes=1700), FP16, 1, 5, 120),  # scores spill from ~60
    ("opt-1.3b", load_hardware("tpu_v1_like"), INT8, 2, 20, 5),
    (MISTRAL_W8, load_hardware("rapid_like"), INT8, 2, 5, 10),  # the steps reach the 8-key window
    ("transformer-base", load_hardware("rapid_like"), INT8, 2, 12, 10),  # encoder once, then the decoder alone
    ("t5-3b", load_hardware("rapid_like"), FP16, 1, 16, 5),
    ("llama-2-7b", load_hardware("rapid_like"), PRUNED_ATTENTION, 2, 5, 9),
    ("llama-2-7b", load_hardware("tpu_v5e_like"), W8A8, 1, 40, 12),
])
def test_a_generation_is_its_decode_steps_simulated_one_by_one(model, hardware, policy, batch, prompt, new):
    spec = load_model(model)
    workload = Workload(batch=batch, tokens=prompt, head="none" if model == "gpt2" else None)
    generation = generate(spec, workload, new, Simulator(hardware, policy))
    first = prompt if spec.family.cache_knob == "tokens" else 1  # an encoder-decoder starts from one token
    lengths = range(first, first + new - 1)
    totals, per_op = step_by_step(spec, workload, lengths, hardware, policy)
    assert list(generation.steps["total_cycles"]) == totals
    assert list(generation.steps["cache_tokens"]) == list(lengths)
    decoded = generation.decode[list(ADDITIVE_COLUMNS)].reset_index(drop=True)
    pd.testing.assert_frame_equal(decoded.astype("int64"), per_op.astype("int64"))


def test_time_to_first_token_is_the_prefill_with_the_last_positions_logits():
    spec = load_model("llama-2-7b")
    hardware = load_hardware("rapid_like")
    generation = generate(spec, Workload(batch=2, tokens=64), 4, Simulator(hardware, INT8))
    prefill = simulate(spec.trace(Workload(batch=2, tokens=64, logits_to_keep=1)), hardware, INT8)
    head = prefill[prefill.role == "head"]
    assert (head["m"] == 2).all()  # one position per sequence
    summary = generation_summary(generation, hardware)
    per_ms = hardware.array.clock_mhz * 1e3
    assert summary["ttft_ms"] == prefill.totals["total_cycles"] / per_ms
    e2e = prefill.totals["total_cycles"] + generation.steps["total_cycles"].sum()
    assert summary["e2e_ms"] == pytest.approx(e2e / per_ms)
    assert summary["tpot_ms"] == pytest.approx(generation.steps["total_cycles"].mean() / per_ms)
    assert summary["tokens_per_s"] == pytest.approx(2 * 4 / (e2e / per_ms / 1e3))


def test_kv_cache_at_the_end_holds_every_token_but_the_last():
    """After N new tokens the cache holds P + N - 1 tokens (the last token's keys are never needed):
    2 x layers x batch x tokens x kv_heads x head_dim x bytes."""
    spec = load_model("llama-3-8b")
    generation = generate(spec, Workload(batch=3, tokens=100), 20, Simulator(load_hardware("rapid_like"), INT8))
    assert generation.kv_cache_bytes == 2 * 32 * 3 * 119 * 8 * 128 * 1
    fp16 = generate(spec, Workload(batch=1, tokens=100), 1, Simulator(load_hardware("rapid_like"), FP16))
    assert fp16.kv_cache_bytes == 100 * 131_072 and len(fp16.steps) == 0  # the prefill's cache, FP16


def test_an_encoder_decoder_runs_its_encoder_once_and_reads_the_cross_attention_cache():
    """transformer-base: the prefill is the encoder over the prompt and the decoder over one start token;
    a step projects no encoder keys or values and reads the cross-attention cache (P tokens) whole, so
    the cache at the end holds N decoder tokens and P encoder tokens, K and V, in every decoder block."""
    spec = load_model("transformer-base")
    hardware = load_hardware("rapid_like")
    generation = generate(spec, Workload(batch=2, tokens=30), 8, Simulator(hardware, INT8))
    prefill = generation.prefill
    assert (prefill[prefill.role == "head"]["m"] == 2).all()  # the start token of each sequence
    assert prefill[prefill.layer.between(0, 5)]["name"].str.startswith("encoder.").all()
    decode = generation.decode
    assert not decode["name"].str.startswith("encoder.").any()
    assert not decode["name"].str.contains(r"encoder_attn\.[kv]$").any()  # cached, not projected
    cross = decode[decode["name"].str.endswith("encoder_attn.qk")]
    assert (cross["n"] == 30).all() and (cross["k"] == 64).all()  # P keys, 8 heads x 64
    assert generation.kv_cache_bytes == 2 * 6 * 2 * (8 + 30) * 512  # K/V x blocks x batch x tokens x width, int8
    summary = generation_summary(generation, hardware)
    assert summary["ttft_ms"] > summary["tpot_ms"] > 0


def test_a_sliding_window_caps_the_cache_and_the_step_time():
    """Mistral keeps the last W - 1 tokens (W keys with the new one): steps past the window cost the same,
    and the cache stops growing."""
    spec = load_model(MISTRAL_W8)
    generation = generate(spec, Workload(batch=2, tokens=5), 12, Simulator(load_hardware("rapid_like"), INT8))
    cycles = list(generation.steps["total_cycles"])
    within, beyond = cycles[:2], cycles[2:]  # caches of 5 and 6 tokens, then 7 (8 keys with the new one)
    assert within[0] < within[1] < beyond[0] and len(set(beyond)) == 1
    assert generation.kv_cache_bytes == 2 * 2 * 2 * 7 * 2 * 16  # layers x K/V x batch x 7 tokens x heads x dim


@pytest.mark.parametrize("new_tokens", [1, 2, 5])
def test_a_windowed_cache_holds_w_minus_one_tokens_from_the_prefill_on(new_tokens):
    """Issue 30.7: a prompt longer than the window left its whole cache after one new token and W after two."""
    spec = load_model(MISTRAL_W8)
    generation = generate(spec, Workload(batch=2, tokens=12), new_tokens, Simulator(load_hardware("rapid_like"), INT8))
    assert generation.kv_cache_bytes == 2 * 2 * 2 * 7 * 2 * 16
    written = generation.prefill[generation.prefill.name.str.endswith("_cache")]
    assert written.dram_write_bytes.sum() == 2 * 2 * 2 * 7 * 2 * 16  # the prefill writes only what is kept


def bandwidth_bound_hardware() -> Hardware:
    """Compute never limits: a wide SFU, many MACs per PE, and 1 byte of DRAM per cycle."""
    data = load_hardware("rapid_like").model_dump()
    data["array"].update(rows=64, cols=256)
    data["macs_per_pe"] = {name: 64 * value for name, value in data["macs_per_pe"].items()}
    data["sfu"]["lanes"] = 4096
    data["memory"]["dram_bytes_per_cycle"] = 1
    return Hardware.model_validate(data)


def test_a_bandwidth_bound_decode_step_takes_its_bytes_over_the_bandwidth():
    """Batch 1: weights (values and scales; an embedding lookup reads one row) plus the KV cache read,
    over the bandwidth, within 2%."""
    spec = load_model("llama-2-7b")
    hardware = bandwidth_bound_hardware()
    tokens = 300
    generation = generate(spec, Workload(tokens=tokens), 2, Simulator(hardware, INT8))
    step = int(generation.steps["total_cycles"].iloc[0])
    kv_read = 2 * 32 * (tokens + 1) * 4096  # int8, the new token's entries included
    embedding_table = 32000 * 4096  # stored, but a decode step gathers one row
    weights = generation.weight_bytes - embedding_table
    assert step == pytest.approx((weights + kv_read) / hardware.memory.dram_bytes_per_cycle, rel=0.02)


def test_tokens_per_second_rise_with_batch_until_compute_bound():
    spec = load_model("llama-2-7b")
    hardware = load_hardware("rapid_like")
    rates, bounds = [], []
    for batch in (1, 2, 4, 8, 16, 32, 64):
        generation = generate(spec, Workload(batch=batch, tokens=128), 3, Simulator(hardware, INT8))
        summary = generation_summary(generation, hardware)
        rates.append(summary["tokens_per_s"])
        bounds.append(summary["bound"]["decode"])
    assert all(later > earlier for earlier, later in itertools.pairwise(rates))
    assert bounds[0] == "memory" and bounds[-1] == "compute"
    gains = [later / earlier for earlier, later in itertools.pairwise(rates)]
    assert gains[-1] < gains[0]  # once compute-bound, doubling the batch buys less


@pytest.mark.parametrize("model", ["llama-3-8b", "gpt2", "opt-1.3b"])
def test_time_per_output_token_never_decreases_with_position(model):
    spec = load_model(model)
    generation = generate(spec, Workload(batch=2, tokens=32), 200, Simulator(load_hardware("rapid_like"), INT8))
    cycles = list(generation.steps["total_cycles"])
    assert all(later >= earlier for earlier, later in itertools.pairwise(cycles))
    assert cycles[-1] > cycles[0]


def test_beams_decode_one_sequence_each_from_one_prefill():
    spec = load_model("llama-3-8b")
    hardware = load_hardware("rapid_like")
    beams = generate(spec, Workload(batch=2, tokens=64), 5, Simulator(hardware, INT8), beams=3)
    wide = generate(spec, Workload(batch=6, tokens=64), 5, Simulator(hardware, INT8))
    single = generate(spec, Workload(batch=2, tokens=64), 5, Simulator(hardware, INT8))
    assert beams.prefill.totals["total_cycles"] == single.prefill.totals["total_cycles"]
    assert list(beams.steps["total_cycles"]) == list(wide.steps["total_cycles"])
    assert beams.kv_cache_bytes == wide.kv_cache_bytes


def test_the_steps_energy_and_the_prefills_add_up_to_the_generations():
    """Issue 30.9: steps.csv carries each step's energy (dynamic plus leakage over its latency)."""
    hardware = load_hardware("tpu_v5e_like")
    generation = generate(load_model("gpt2"), Workload(batch=2, tokens=64), 20,
                          Simulator(hardware, load_run_config("w8a8")))
    summary = generation_summary(generation, hardware)
    steps = generation.steps
    assert len(steps) == 19 and (steps["energy_pj"] > 0).all()
    total = steps["energy_pj"].sum() + generation.prefill.totals["energy"]["total_pj"]
    assert total == pytest.approx(summary["energy"]["total_pj"], rel=1e-12)
    assert 0 < summary["utilization"] < generation.prefill.totals["utilization"]  # decode fills the array less


@pytest.mark.parametrize("knob, model", [("phase", "llama-2-7b"), ("logits_to_keep", "llama-2-7b"),
                                         ("stage", "llama-2-7b"), ("decoder_tokens", "transformer-base")])
def test_a_knob_generation_sets_for_each_pass_is_refused_not_overwritten(knob, model):
    value = {"phase": "decode", "logits_to_keep": 4, "stage": 0, "decoder_tokens": 8}[knob]
    simulator = Simulator(load_hardware("tpu_v5e_like"), load_run_config("int8"))
    with pytest.raises(InputError, match=f"leave the workload's {knob} unset"):
        generate(load_model(model), replace(Workload(tokens=16), **{knob: value}), 3, simulator)
