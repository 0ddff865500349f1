"""Mixture of experts (Mixtral): the expected routing, the held weights of untouched experts, and the
closed form against the real Hugging Face model (hf extra; never skipped).

Hugging Face's routing depends on the data, so the traced model (meta tensors, the ``batched_mm``
experts implementation) runs every token-expert pair as one batched product. The comparison is
therefore exact for everything outside the experts, and per block for the experts' work: the router
GEMM's shape, the MACs of each expert projection summed over experts, and the element totals of the
router softmax, SiLU and multiplies.
"""

import math
from collections import defaultdict

import pytest
from cli_helpers import ROOT, TESTS, accelsim, assert_one_line_error

from simulator.engine import Simulator
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_run_config
from workloads.errors import InputError
from workloads.families.mixtral import expected_experts, expert_loads, experts_touched
from workloads.models import ModelSpec, Workload, load_model
from workloads.ops import Op

TINY = str(TESTS / "configs" / "mixtral-window-8.json")  # 4 experts, top-2, window 8
CONFIGS = ROOT / "configs"


def expert_params(spec):
    cfg = spec.config
    return 3 * cfg["hidden_size"] * cfg["intermediate_size"]


@pytest.mark.parametrize(("routed", "experts", "top_k", "expected"), [
    (1, 8, 2, 2.0), (2, 8, 2, 3.5), (4, 8, 2, 8 * (1 - 0.75**4)), (1, 4, 1, 1.0), (3, 4, 4, 4.0), (10_000, 8, 2, 8.0)])
def test_expected_distinct_experts(routed, experts, top_k, expected):
    assert expected_experts(routed, experts, top_k) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("expected", [2.0, 3.5, 5.47, 7.2, 7.999999999])
@pytest.mark.parametrize("layers", [1, 3, 32])
def test_layers_run_the_expected_experts_in_whole_numbers(expected, layers):
    counts = [experts_touched(layer, expected) for layer in range(layers)]
    assert sum(counts) == math.floor(layers * expected + 0.5)
    assert set(counts) <= {math.floor(expected), math.ceil(expected)}


@pytest.mark.parametrize(("routed", "top_k", "touched"), [(1, 2, 2), (2, 2, 3), (2, 2, 4), (26, 2, 4), (9, 1, 5)])
@pytest.mark.parametrize("imbalance", [1.0, 1.5, 3.0])
def test_expert_loads_conserve_the_token_expert_pairs(routed, top_k, touched, imbalance):
    loads = expert_loads(routed, top_k, touched, imbalance)
    assert len(loads) == touched and sum(loads) == routed * top_k
    assert all(1 <= load <= routed for load in loads)  # a token picks an expert at most once
    assert loads[0] == max(loads)
    if imbalance == 1.0:
        assert max(loads) - min(loads) <= 1  # even
    mean = routed * top_k / touched
    assert loads[0] == min(routed, routed * top_k - (touched - 1), max(math.ceil(mean), round(imbalance * mean)))


def test_imbalance_concentrates_tokens_without_changing_the_work():
    spec = load_model(TINY)
    even, skewed = (spec.trace(Workload(batch=4, tokens=16, expert_imbalance=f)) for f in (1.0, 2.0))
    assert even.macs == skewed.macs and even.params == skewed.params
    rows = [[op.m for op in trace if op.layer == 0 and op.name.endswith("gate_up_proj")] for trace in (even, skewed)]
    assert rows[0] == [32] * 4 and rows[1] == [64, 22, 21, 21]  # 64 tokens x 2 experts; busiest = 2 x mean


@pytest.mark.parametrize("batch", [1, 2, 3, 8])
def test_a_decode_step_reads_only_the_touched_experts(batch):
    """Expert weights read from DRAM in a decode step = round(L x E(1 - (1 - k/E)^B)) experts; the
    others are held: counted in the parameters and stored bytes, never read."""
    spec = load_model(TINY)
    cfg = spec.config
    trace = spec.trace(Workload(batch=batch, tokens=20, phase="decode"))
    layers, experts = cfg["num_hidden_layers"], cfg["num_local_experts"]
    touched = math.floor(layers * expected_experts(batch, experts, cfg["num_experts_per_tok"]) + 0.5)
    run = [op for op in trace if op.role in ("ffn1", "ffn2") and not op.held]
    held = [op for op in trace if op.held]
    assert sum(op.weight_params for op in run) == touched * expert_params(spec)
    assert sum(op.weight_params for op in held) == (layers * experts - touched) * expert_params(spec)
    sim = Simulator(load_hardware("tpu_v5e_like"), load_run_config(CONFIGS / "int8.yaml"))
    results = sim.run(trace)
    assert not set(results["name"]) & {op.name for op in held}  # held weights: no step
    ffn = results[results["role"].isin(["ffn1", "ffn2"]) & (results["unit"] == "array")]
    hidden, inner = cfg["hidden_size"], cfg["intermediate_size"]
    per_expert = expert_params(spec) + 2 * (2 * inner + hidden)  # int8 values, an FP16 scale per output channel
    assert ffn["dram_read_bytes"].sum() == touched * per_expert  # each read from DRAM once


def test_untouched_experts_still_count_in_memory():
    spec = load_model("mixtral-8x7b")
    decode = spec.trace(Workload(batch=1, tokens=64, phase="decode"))
    assert decode.params == 46_702_792_704  # Hugging Face's num_parameters(), every expert included
    assert sum(op.held for op in decode) == 2 * 32  # 6 of 8 experts held in every block
    hardware = load_hardware("tpu_v5e_like")
    with pytest.raises(InputError, match="more than hardware tpu_v5e_like's DRAM"):  # 46.7 GB of int8 > 16 GB
        Simulator(hardware, load_run_config(CONFIGS / "int8.yaml")).run(decode)


def test_held_op_is_a_gemm_of_no_rows_with_weights():
    with pytest.raises(ValueError, match="matrix sizes"):
        Op("x", 0, "ffn1", "ffn", "bmm", batch=1, m=0, k=4, n=4)
    with pytest.raises(ValueError, match="matrix sizes"):
        Op("x", 0, "ffn1", "ffn", "gemm", batch=1, m=0, k=4, n=4)  # no weights: not a holder of any
    assert Op("x", 0, "ffn1", "ffn", "gemm", batch=2, m=0, k=4, n=4, weight_params=32).held


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "llama-2-7b", "--expert-imbalance", "2"], "--expert-imbalance does not apply to llama models"),
    (["--model", "mixtral-8x7b", "--expert-imbalance", "0.5"], "from 1 (even) to num_local_experts / "
                                                              "num_experts_per_tok = 4, got 0.5"),
])
def test_bad_imbalance_is_refused_in_one_line(args, message):
    assert_one_line_error(accelsim("extract", *args, "--tokens", "8"), message)


@pytest.mark.hf
def test_tracing_a_mixture_of_experts_for_simulation_is_refused():
    assert_one_line_error(accelsim("run", "configs/int8.yaml", "--model", TINY, "--tokens", "8", "--trace"),
                          "expert routing depends on the data")


@pytest.mark.parametrize("value", [4.01, math.nan, math.inf, True, "2"])
def test_imbalance_beyond_every_token_on_one_expert_is_refused(value):
    with pytest.raises(InputError, match="from 1 .even. to num_local_experts / num_experts_per_tok = 4, got"):
        load_model("mixtral-8x7b").resolve(Workload(expert_imbalance=value))


# --- against Hugging Face ---------------------------------------------------------------------------------

def _split(trace):
    """(ops outside the experts' feed-forward, per-block totals of the mixture's work)."""
    outside, moe = [], defaultdict(int)
    for op in trace:
        part = op.name.split(".mlp.")[-1].split(".")[0] if ".mlp." in op.name else ""
        if part not in ("gate", "experts"):
            outside.append(op)
        elif op.is_matrix and part == "gate":
            moe[(op.layer, "router", op.m, op.k, op.n)] += 1
        elif op.is_matrix:  # HF: (2I x H) @ (H x 1) per pair; closed form: rows x H @ H x 2I per expert
            weight = sorted((op.k, op.m if op.kind == "bmm" else op.n))
            moe[(op.layer, "experts", *weight)] += op.macs
        elif op.role in ("softmax", "silu") or (op.role == "mul" and part == "experts"):
            moe[(op.layer, op.role)] += op.elements
    return outside, dict(moe)


@pytest.mark.hf
@pytest.mark.parametrize(("name", "workload"), [
    ("mixtral-8x7b", Workload(batch=2, tokens=13)),
    ("mixtral-8x7b", Workload(batch=2, tokens=13, phase="decode")),
    (TINY, Workload(batch=2, tokens=12)),  # a prefill longer than the window
    (TINY, Workload(batch=3, tokens=12, phase="decode")),  # the step attends to the last 8 keys
    (TINY, Workload(batch=1, tokens=5, phase="decode", logits_to_keep=None)),
])
def test_closed_form_equals_traced_outside_and_in_total_inside_the_experts(name, workload):
    from test_hf_trace import kv_group, matrix_shapes, vector_totals

    from workloads.hf_model import hf_num_parameters
    from workloads.hf_trace import trace_hf

    spec = load_model(name)
    resolved = spec.resolve(workload)
    closed, traced = spec.trace(workload), trace_hf(spec, resolved, experts_as_pairs=True)
    (closed_outside, closed_moe), (traced_outside, traced_moe) = _split(closed), _split(traced)
    assert matrix_shapes(closed_outside) == matrix_shapes(traced_outside, kv_group(spec))
    assert vector_totals(closed_outside) == vector_totals(traced_outside)
    assert closed_moe == traced_moe
    assert closed.params == traced.params == hf_num_parameters(spec, resolved)


def test_router_and_combine_work_per_block():
    """Per block, for R routed tokens: softmax over R x E logits, top-k as k passes over them, the k kept
    scores summed and divided (2 R k), and the combine reading R x k outputs of H; by default the tokens
    spread evenly (imbalance 1)."""
    spec = load_model(TINY)  # E = 4, k = 2, H = 64
    trace = spec.trace(Workload(batch=3, tokens=7))
    routed = 21
    elements = {op.name.split(".mlp.")[1]: op.elements for op in trace if op.layer == 2 and not op.is_matrix
                and ".mlp.gate." in op.name or op.name.endswith("experts.combine") and op.layer == 2}
    assert elements == {"gate.softmax": routed * 4, "gate.topk": routed * 4 * 2, "gate.normalize": 2 * routed * 2,
                        "experts.combine": routed * 2 * 64}
    assert trace.ops == spec.trace(Workload(batch=3, tokens=7, expert_imbalance=1.0)).ops
    assert [op.m for op in trace if op.layer == 0 and op.name.endswith("gate_up_proj")] == [11, 11, 10, 10]


def test_top_k_may_be_every_expert_but_not_more():
    cfg = dict(load_model(TINY).config)
    every = ModelSpec("every", {**cfg, "num_experts_per_tok": 4})
    assert not [op for op in every.trace(Workload(batch=1, tokens=3, phase="decode")) if op.held]
    with pytest.raises(InputError, match="num_experts_per_tok=5 exceeds num_local_experts=4"):
        ModelSpec("more", {**cfg, "num_experts_per_tok": 5}).trace(Workload(tokens=3))
