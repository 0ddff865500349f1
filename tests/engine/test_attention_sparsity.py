"""N:M sparsity on the attention products (seed 002's GEMM-MHA): the vector unit selects the N largest
of every M values of the pruned operand at run time, and the product runs at the kept depth."""

from __future__ import annotations

import math

import pytest

from simulator.engine import Simulator, simulate
from simulator.engine.timing import gemm_cycles
from simulator.formats.sparsity import SparsityPattern
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import policy_from_dict
from workloads.errors import InputError
from workloads.models import Workload, load_model
from workloads.ops import Op, Tensor, Trace

RAPID = load_hardware("rapid_like")


def policy(attention: dict | None, default: str = "fp16", **precision) -> object:
    sparsity = {"attention": attention} if attention else {}
    return policy_from_dict({"name": "nm", "hardware": "rapid_like",
                             "precision": {"default": default, **precision}, "sparsity": sparsity})


def bert(tokens: int):
    return load_model("bert-base").trace(Workload(tokens=tokens))


@pytest.mark.parametrize(("tokens", "role", "given", "text"), [
    (128, "bmm_av", "probabilities", "2:4"),
    (130, "bmm_av", "probabilities", "2:4"),  # a trailing group of 2 keys keeps both
    (130, "bmm_av", "probabilities", "1:4"),  # runs at the 2:4 rate: 1:4 never overfills a 2:4 group
    (128, "bmm_qk", "keys", "2:4"),
])
def test_an_attention_product_runs_at_the_kept_depth(tokens, role, given, text):
    res = simulate(bert(tokens), RAPID, policy({given: text}))
    dense = simulate(bert(tokens), RAPID, policy(None))
    product, dense_product = (r[r.role == role].iloc[0] for r in (res, dense))
    runs_at = SparsityPattern(2, 4)  # the pattern rapid_like's PEs skip
    kept = 2 * (product.k // 4) + min(2, product.k % 4)
    closed = gemm_cycles(product.m, kept, product.n, RAPID.array.rows, RAPID.array.cols, RAPID.array.dataflow,
                         batch=product.batch, pack=RAPID.macs_per_pe["fp16"])
    assert runs_at.kept(product.k) == kept
    assert product.compute_cycles == closed.compute_cycles < dense_product.compute_cycles
    assert product.macs == product.batch * product.m * kept * product.n
    assert product.sparsity == text
    other = "bmm_qk" if role == "bmm_av" else "bmm_av"  # the other product stays dense
    assert (res[res.role == other].compute_cycles.values == dense[dense.role == other].compute_cycles.values).all()


def test_the_selection_costs_vector_unit_time_over_every_value_it_looks_at():
    res = simulate(bert(128), RAPID, policy({"probabilities": "2:8", "keys": "2:4"}))
    select = res[res.role == "nm_select"]
    heads, tokens, hidden = 12, 128, 768
    assert len(select) == 2 * 12  # per block: the probabilities and the keys
    elements = sorted(set(select.elements))
    assert elements == [tokens * hidden, heads * tokens * tokens]  # keys, probabilities: all of them
    cost = RAPID.sfu.cycles_per_element["nm_select"]
    for row in select.itertuples():
        assert row.compute_cycles == math.ceil(row.elements * cost / RAPID.sfu_lanes) > 0
    assert res[res.role == "softmax"].shape[0] == 12  # the selection is not folded into the softmax's pass
    assert select.fused_into.eq("").all()


def test_the_gain_is_the_bmm_cycles_saved_less_the_selection():
    dense = simulate(bert(128), RAPID, policy(None))
    res = simulate(bert(128), RAPID, policy({"probabilities": "2:4"}))
    saved = (dense[dense.role == "bmm_av"].total_cycles.sum() - res[res.role == "bmm_av"].total_cycles.sum())
    selection = res[res.role == "nm_select"].total_cycles.sum()
    assert saved > 0 and selection > 0
    assert dense.totals["total_cycles"] - res.totals["total_cycles"] == saved - selection


def test_pruned_keys_stay_compressed_in_the_kv_cache():
    """Closed form: per token and KV head, head_dim/M groups of N kept int8 values with a 3-bit (1:8)
    position each, plus the 16-bit per-head scale; values stay dense."""
    spec = load_model("llama-2-7b")
    tokens, batch = 40, 2
    trace = spec.trace(Workload(tokens=tokens, batch=batch, phase="decode", head="none"))
    layers, heads, head_dim = 32, 32, 128
    kv = {}
    for attention in (None, {"keys": "1:8"}):
        sim = Simulator(RAPID, policy(attention, default="int8", kv_cache="int8"))
        lowered = sim.prepare(trace).lowered
        kv[bool(attention)] = {n: t.stored_bytes for n, t in lowered.tensors.items() if t.kind == "state"}
    vectors = batch * (tokens + 1) * heads  # the cache holds the new token too
    keys = vectors * (head_dim // 8 * 1 * (8 + 3) + 16) // 8
    values = vectors * (head_dim * 8 + 16) // 8
    assert sum(kv[True].values()) == layers * (keys + values)
    assert sum(kv[False].values()) == layers * 2 * values


def test_a_decode_step_selects_only_its_new_keys_and_reads_the_compressed_cache():
    spec = load_model("llama-2-7b")
    trace = spec.trace(Workload(tokens=64, phase="decode", head="none"))
    res = simulate(trace, RAPID, policy({"keys": "2:4"}, default="int8", kv_cache="int8"))
    dense = simulate(trace, RAPID, policy(None, default="int8", kv_cache="int8"))
    select = res[res.role == "nm_select"]
    assert set(select.elements) == {4096}  # one token's keys per block
    # The product reads the cache's kept keys compressed from DRAM (65 tokens x 32 heads, each 64 kept int8
    # values with 2-bit positions and one 16-bit scale); the per-head scales are constant along head_dim,
    # the product's K, so they scale its scores and the cache is not dequantized.
    product = res[res.name.str.endswith("self_attn.qk")]
    dense_product = dense[dense.name.str.endswith("self_attn.qk")]
    assert not res.name.str.endswith("dequantize_b").any()
    assert set(product.dram_read_bytes) == {65 * 32 * (64 * (8 + 2) + 16) // 8}
    assert set(dense_product.dram_read_bytes) == {65 * 32 * (128 * 8 + 16) // 8}


def test_hardware_that_skips_no_pattern_computes_attention_dense_with_a_note():
    tpu = load_hardware("tpu_v5e_like")
    res = simulate(bert(128), tpu, policy({"probabilities": "2:4"}, default="native"))
    dense = simulate(bert(128), tpu, policy(None, default="native"))
    assert "nm_select" not in set(res.role)
    assert res.totals["total_cycles"] == dense.totals["total_cycles"]
    assert any("cannot skip 2:4 attention sparsity" in note for note in res.notes)


def test_a_pattern_on_products_a_model_lacks_is_refused():
    no_attention = Trace("mlp", (Op("fc", 0, "ffn1", "ffn", "gemm", batch=1, m=4, k=8, n=8, weight_params=64),))
    for given in ("keys", "probabilities"):
        with pytest.raises(InputError, match=f"sparsity.attention.{given} does not apply to mlp"):
            simulate(no_attention, RAPID, policy({given: "2:4"}))


def test_a_pruned_tensor_stores_its_kept_values_with_positions():
    pruned = Tensor("p", "activation", 2 * 10, bits=16, nm_kept=2, nm_group=4, nm_row=10)
    # Each row of 10: groups of 4, 4 and a tail of 2 keep 2 + 2 + 2 values, each 16 bits + 2 position bits.
    assert pruned.values_of(20) == 12 and pruned.stored_bytes == math.ceil(12 * 18 / 8)
    assert pruned.bytes_of(13) == math.ceil((6 + 2) * 18 / 8)  # one row and 3 of the next (a 3-value group)
    with pytest.raises(ValueError, match="N:M fields"):
        Tensor("q", "activation", 8, bits=16, nm_kept=5, nm_group=4, nm_row=8)


def test_the_shipped_gpusq_like_config_says_what_rapid_like_makes_of_it():
    """Its header: on rapid_like's 64-lane vector unit the selection costs more than 2:4-rate BMMs save."""
    from simulator.spec.run_config import load_run_config

    trace = load_model("bert-base").trace(Workload())  # `accelsim run`'s: 384 tokens, QA head
    with_attention = simulate(trace, RAPID, load_run_config("int8_sp_attn"))
    weights_only = simulate(trace, RAPID, load_run_config("int8_sp"))
    assert with_attention.totals["total_cycles"] > weights_only.totals["total_cycles"]
    assert round(with_attention.totals["total_cycles"] / 1e6, 2) == 10.33
    assert round(weights_only.totals["total_cycles"] / 1e6, 2) == 9.85


def test_keys_fewer_than_a_group_are_one_short_group() -> None:
    """A decode step's first keys (fewer than M): min(N, keys) of them kept; the step runs (it was refused
    as an internal error before)."""
    short = Tensor("k", "activation", 3 * 2, bits=8, nm_kept=2, nm_group=8, nm_row=2)
    assert short.values_of(6) == 6
    assert Tensor("k", "activation", 3 * 5, bits=8, nm_kept=2, nm_group=8, nm_row=5).values_of(15) == 6
    with pytest.raises(ValueError, match="0 < N <= M"):
        Tensor("k", "activation", 4, nm_kept=3, nm_group=2, nm_row=4)
    policy = policy_from_dict({"name": "a", "hardware": "rapid_like_4core", "precision": {"default": "int8"},
                               "sparsity": {"attention": {"probabilities": "2:8"}}})
    results = simulate(load_model("llama-2-7b").trace(Workload(tokens=1, phase="decode")),
                       load_hardware("rapid_like_4core"), policy)
    assert results.totals.total_cycles > 0
