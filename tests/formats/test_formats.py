"""Compression formats: separate weight/activation/KV formats, group and block scales, the compute-format
rule, dequantization, per-token scales and outliers (closed forms and invariants)."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest

from simulator.engine import Simulator, simulate
from simulator.formats.precision import compute_format, parse_precision
from simulator.formats.storage import op_storage, parameter_storage
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_run_config, policy_from_dict
from workloads.errors import InputError
from workloads.families.base import Workload
from workloads.models import load_model
from workloads.ops import Op

RAPID = load_hardware("rapid_like")


def policy(precision: dict, **extra):
    return policy_from_dict({"name": "t", "hardware": "rapid_like", "precision": precision, **extra}).on(RAPID)


def gemm(k: int, n: int, batch: int = 1) -> Op:
    return Op("g", 0, "ffn1", "ffn", "gemm", batch=batch, m=4, k=k, n=n, weight_params=batch * k * n)


# ---- storage: closed forms ----

@pytest.mark.parametrize(("precision", "k", "n", "expected_scale_bits"), [
    # int4, groups of 128, FP16 scale + 4-bit zero point: ceil(K/128) groups per output channel
    ({"weights": "int4", "activations": "native",
      "weight_scales": {"per": "group", "group_size": 128, "zero_point_bits": 4}}, 4096, 64, 64 * 32 * 20),
    ({"weights": "int4", "activations": "native",  # a tail group: 300 = 2 x 128 + 44
      "weight_scales": {"per": "group", "group_size": 128, "zero_point_bits": 4}}, 300, 64, 64 * 3 * 20),
    ({"default": "int8", "weight_scales": {"per": "channel", "scale_bits": 16}}, 300, 64, 64 * 16),
    ({"default": "int8", "weight_scales": {"per": "tensor", "scale_bits": 32}}, 300, 64, 32),
    ({"default": "fp8_e4m3", "weight_scales": {"per": "tensor", "scale_bits": 32}}, 300, 64, 32),
    ({"default": "mxfp4"}, 300, 64, 64 * 10 * 8),  # ceil(300 / 32) = 10 blocks of 8-bit scales
    ({"default": "mxint8"}, 4096, 64, 64 * 128 * 8),
    ({"default": "nvfp4"}, 300, 64, 64 * 19 * 8 + 32),  # ceil(300 / 16) = 19 E4M3 scales, one FP32 tensor scale
    ({"default": "fp16"}, 300, 64, 0),
])
def test_weight_storage_closed_forms(precision, k, n, expected_scale_bits):
    rules = policy(precision)
    row = op_storage(gemm(k, n), rules)
    fmt = rules.weight_precision(gemm(k, n))
    assert row.value_bits == k * n * fmt.bits
    assert row.scale_bits == expected_scale_bits


def test_bits_per_weight_of_the_shipped_formats():
    """4.15625 (W4A16 g128), 4.25 (MXFP4), 8.25 (MXFP8, MXINT8), 6.25 (MXFP6), 4.5 + 32 per tensor (NVFP4)."""
    op = gemm(4096, 4096)
    per_weight = {}
    for name in ("w4a16_g128", "mxfp4", "nvfp4"):
        row = op_storage(op, load_run_config(name).on(RAPID))
        per_weight[name] = (row.value_bits + row.scale_bits) / op.weight_params
    assert per_weight["w4a16_g128"] == 4.15625
    assert per_weight["mxfp4"] == 4.25
    assert per_weight["nvfp4"] == 4.5 + 32 / op.weight_params
    for name, bits in (("mxfp8", 8.25), ("mxint8", 8.25), ("mxfp6", 6.25)):
        row = op_storage(op, policy({"default": name}))
        assert (row.value_bits + row.scale_bits) / op.weight_params == bits


def test_llama_w4a16_g128_footprint_is_exact():
    """Every linear layer of the 32 blocks at 4.15625 bits; embeddings, norms and the LM head at 16."""
    trace = load_model("llama-2-7b").trace(Workload(head="lm"))
    result = parameter_storage(trace, load_run_config("w4a16_g128").on(RAPID))
    linear = result.pruned_linear
    assert linear.params == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    assert linear.bits_with_scales == linear.params * 4.15625
    rest = result.total.params - linear.params
    assert result.total.bits_with_scales == linear.bits_with_scales + 16 * rest


def test_outlier_rows_are_left_out_of_the_groups():
    rules = policy({"weights": "int4", "activations": "native",
                    "weight_scales": {"per": "group", "group_size": 128, "zero_point_bits": 4}},
                   outliers={"dims": 44, "precision": "fp16"})
    row = op_storage(gemm(300, 64), rules)  # 256 rows left: two whole groups
    assert row.scale_bits == 64 * 2 * 20
    assert row.value_bits == 64 * (256 * 4 + 44 * 16)


# ---- the compute-format rule ----

RAPID_FORMATS = ["fp32", "fp16", "int8", "int4", "int2"]
TPU_V5E_FORMATS = ["bf16", "int8"]


@pytest.mark.parametrize(("weights", "activations", "supported", "expected"), [
    ("int4", "fp16", RAPID_FORMATS, "fp16"),      # W4A16
    ("int4", "int8", RAPID_FORMATS, "int8"),      # W4A8
    ("int8", "int8", RAPID_FORMATS, "int8"),      # W8A8
    ("int4", "int4", RAPID_FORMATS, "int4"),
    ("int2", "int4", RAPID_FORMATS, "int4"),
    ("int4", "bf16", TPU_V5E_FORMATS, "bf16"),    # W4A16 on a bf16 chip
    ("int4", "int4", TPU_V5E_FORMATS, "int8"),    # no int4 units: the next integer unit
    ("fp8_e4m3", "fp8_e4m3", RAPID_FORMATS, "fp16"),
    ("fp8_e5m2", "fp8_e4m3", TPU_V5E_FORMATS, "bf16"),
    ("int8", "fp8_e4m3", RAPID_FORMATS, "fp16"),  # neither holds the other
    ("mxfp4", "fp16", RAPID_FORMATS, "fp16"),
    ("mxint8", "int8", RAPID_FORMATS, "int8"),
    ("mxfp4", "mxfp4", ["mxfp4", "fp16"], "mxfp4"),  # an array with MX units
    ("mxfp4", "mxfp8", ["fp8_e4m3", "mxfp8", "fp16"], "mxfp8"),  # block operands: the unit that applies scales
    ("fp8_e4m3", "fp8_e4m3", ["mxfp8", "fp8_e4m3"], "fp8_e4m3"),
    ("int4", "fp8_e4m3", ["mxfp8", "fp8_e4m3"], "fp8_e4m3"),  # plain operands: the plain unit
    ("mxfp4", "fp8_e4m3", ["fp8_e4m3", "mxfp8"], "mxfp8"),  # one block operand is enough
    ("bf16", "bf16", ["fp16", "int8"], None),      # fp16 has the significand but not the exponent range
    ("int8", "int8", ["fp16", "int16"], "int16"),  # integers prefer an integer unit
    ("int16", "int8", ["fp16", "int8"], None),     # fp16 holds no int16
    ("fp16", "bf16", TPU_V5E_FORMATS, None),       # bf16 holds no fp16
])
def test_compute_format_rule(weights, activations, supported, expected):
    chosen = compute_format(parse_precision(weights), parse_precision(activations),
                            [parse_precision(name) for name in supported])
    assert (chosen.name if chosen else None) == expected


# ---- timing and traffic ----

def _bandwidth_bound(**changes):
    """rapid_like with a narrow DRAM, so that a batch-1 decode step waits for its weights."""
    data = RAPID.model_dump()
    data["memory"]["dram_bytes_per_cycle"] = 4.0
    data["energy"] = None
    data.update(changes)
    return type(RAPID).model_validate(data)


def test_w4a16_decode_moves_its_share_of_the_fp16_weight_bytes():
    """Decode at batch 1 on a bandwidth-bound chip whose PEs apply int4 group scales: every linear layer
    reads 4.15625/16 of its FP16 weight bytes, and its time follows the bytes."""
    hardware = _bandwidth_bound(dequantize_in_pe=["int4"])
    trace = load_model("llama-2-7b").trace(Workload(tokens=64, phase="decode", head="none"))
    fp16 = simulate(trace, hardware, policy({"default": "fp16"}))
    w4 = simulate(trace, hardware, load_run_config("w4a16_g128"))
    linear16, linear4 = fp16[fp16.category == "linear"], w4[w4.category == "linear"]
    assert list(linear16.name) == list(linear4.name) and len(linear4) == 32 * 7
    weight_bytes16 = (linear16.k * linear16.n * 2).sum()
    assert (linear16.dram_read_bytes - linear16.filter_write_bytes).abs().sum() == 0  # only weights come in
    assert linear16.dram_read_bytes.sum() == weight_bytes16
    assert linear4.dram_read_bytes.sum() == weight_bytes16 * 4.15625 / 16
    assert (linear4.bound == "memory").all() and (linear16.bound == "memory").all()
    ratio = linear4.total_cycles.sum() / linear16.total_cycles.sum()
    assert ratio == pytest.approx(4.15625 / 16, rel=0.02)
    assert not w4.name.str.endswith(".dequantize_w").any()  # the PEs apply the group scales


def test_vector_unit_dequantizes_group_scaled_weights_into_the_filter_buffer():
    """Without in-PE dequantization, each linear layer gets a dequantize step over its K x N weights that
    reads the stored bytes; the product reads the FP16 weights from the filter buffer, not DRAM."""
    trace = load_model("bert-base").trace(Workload(tokens=128))
    res = simulate(trace, RAPID, load_run_config("w4a16_g128"))
    linear = res[res.category == "linear"]
    dequant = res[res.name.str.endswith(".dequantize_w")]
    assert len(dequant) == len(linear) and list(dequant.elements) == list(linear.k * linear.n)
    stored = [math.ceil((k * n * 4 + n * math.ceil(k / 128) * 20) / 8) for k, n in zip(linear.k, linear.n, strict=True)]
    assert list(dequant.dram_read_bytes) == stored
    assert linear.dequantized.all() and (linear.filter_write_bytes == linear.k * linear.n * 2).all()
    assert (linear.compute_precision == "fp16").all() and (linear.precision == "int4/fp16").all()
    ratio = RAPID.sfu.cycles_per_element["dequantize"] / RAPID.sfu.lanes
    assert list(dequant.compute_cycles) == [math.ceil(e * ratio) for e in dequant.elements]


def test_pruned_group_scaled_weights_are_dequantized_kept_values_only():
    """2:4 + int4 g128 on rapid_like (which skips 2:4): the vector unit scales the K/2 x N kept weights,
    and the filter buffer receives them compressed (fp16 values with their 2-bit positions)."""
    trace = load_model("bert-base").trace(Workload(tokens=128))
    res = simulate(trace, RAPID, load_run_config("w4a16_g128_sp"))
    linear = res[res.category == "linear"]
    dequant = res[res.name.str.endswith(".dequantize_w")]
    assert list(dequant.elements) == list(linear.k * linear.n // 2)
    assert list(linear.filter_write_bytes) == list(linear.k // 2 * linear.n * (16 + 2) // 8)
    assert (linear.sparsity == "2:4").all()


def test_mx_units_apply_the_block_scales_that_other_arrays_dequantize():
    """MXFP4 weights x MXFP8 activations: on an array with MXFP8 units the product runs in mxfp8 and reads
    the stored weights (the shared E8M0 scales carry over); on rapid_like the vector unit dequantizes."""
    trace = load_model("bert-base").trace(Workload(tokens=128))
    data = RAPID.model_dump()
    data["macs_per_pe"].update(mxfp8=8)
    with_mx = simulate(trace, type(RAPID).model_validate(data), load_run_config("mxfp4"))
    without = simulate(trace, RAPID, load_run_config("mxfp4"))
    linear = with_mx[with_mx.category == "linear"]
    assert (linear.compute_precision == "mxfp8").all() and not linear.dequantized.any()
    assert not with_mx.name.str.endswith(".dequantize_w").any()
    assert without.name.str.endswith(".dequantize_w").sum() == len(linear)
    # The weights arrive as stored: 4.25 bits each, the block scales included.
    assert list(linear.filter_write_bytes) == [k * n * 17 // 32 for k, n in zip(linear.k, linear.n, strict=True)]


def test_per_token_activation_scales_cost_an_absmax_pass_and_their_bytes():
    trace = load_model("bert-base").trace(Workload(tokens=128))
    res = simulate(trace, RAPID, load_run_config("w8a8"))
    absmax = res[res.role == "absmax"]
    quantize = res[(res.role == "quantize") & res.name.str.contains("quantize")]
    assert len(absmax) > 0 and set(absmax.name.str.replace("_absmax", "")) <= set(quantize.name)
    assert (absmax.compute_cycles > 0).all()
    static = simulate(trace, RAPID, policy({"default": "int8", "groups": {"embedding": "native", "norm": "native"}}))
    assert res.totals["compute_cycles"] > static.totals["compute_cycles"]


def test_outliers_cost_a_product_of_their_own():
    """Cycles rise with the outlier dimensions; the useful MACs stay those of the whole matrices."""
    trace = load_model("bert-base").trace(Workload(tokens=128))
    runs = [simulate(trace, RAPID, policy({"default": "int8"}, outliers={"dims": d, "precision": "fp16"}))
            for d in (8, 64, 256)]
    plain = simulate(trace, RAPID, policy({"default": "int8"}))
    cycles = [r.totals["compute_cycles"] for r in runs]
    assert plain.totals["compute_cycles"] < cycles[0] < cycles[1] < cycles[2]
    assert all(r.totals["macs"] == plain.totals["macs"] for r in runs)
    res = runs[1]
    is_outlier = res.name.str.endswith(".outliers")
    outlier, main = res[is_outlier], res[~is_outlier & (res.unit == "array") & (res.kind != "bmm")]
    assert (outlier.k == 64).all() and (outlier.compute_precision == "fp16").all()
    assert list(outlier.name) == [f"{name}.outliers" for name in main.name]
    assert (main.k + 64).isin([768, 3072]).all() and (main.compute_precision == "int8").all()


def test_kv_cache_bytes_with_per_head_scales():
    """2 x layers x batch x tokens x kv_heads x (head_dim x bits + scale bits) / 8."""
    spec = load_model("llama-3-8b")
    cfg = spec.config
    layers, kv_heads, head_dim = cfg["num_hidden_layers"], cfg["num_key_value_heads"], 128
    step = spec.trace(Workload(batch=2, tokens=100, phase="decode", head="none"))
    for name, bits in (("w4a16_g128_kv8", 8), ("w4a16_g128_kv4", 4)):
        prepared = Simulator(RAPID, load_run_config(name)).prepare(step)
        state = sum(t.stored_bytes for t in prepared.lowered.tensors.values() if t.kind == "state")
        assert state == 2 * layers * 2 * 101 * kv_heads * (head_dim * bits + 16) // 8
        res = simulate(step, RAPID, load_run_config(name))
        assert not res.name.str.endswith(".dequantize_b").any()  # the cache itself is never rescaled


def test_per_head_kv_scales_cost_one_multiply_per_score_and_per_probability():
    """Issue 30.2: a scale per (token, head) is constant along head_dim. Q K^T (reduces over head_dim): one
    multiply per score, in its output's dequantize; P V (reduces over tokens): one per probability."""
    spec = load_model("llama-2-7b")
    step = spec.trace(Workload(batch=8, tokens=2048, phase="decode", head="none"))
    tpu = load_hardware("tpu_v5e_like")
    res = simulate(step, tpu, load_run_config("w4a16_g128_kv8"))
    scores = 8 * 32 * 1 * 2049  # batch x heads x one query x cached tokens, per layer
    for suffix in (".qk.dequantize", ".av.kv_scales"):
        rows = res[res.name.str.endswith(suffix)]
        assert len(rows) == 32 and (rows.elements == scores).all(), suffix
    cache_elements = 2 * 32 * 8 * 2049 * 4096
    attention = res.name.str.contains(r"\.(?:qk|av)\.")
    sfu_elements = res[(res.unit == "sfu") & attention].elements.sum()
    assert sfu_elements < cache_elements / 32  # not a pass over the cache (head_dim = 128 times more)
    plain = simulate(step, tpu, load_run_config("w4a16_g128"))  # a 16-bit cache: twice the cache bytes
    assert res.totals["dram_bytes"] < plain.totals["dram_bytes"]
    assert res.totals["total_cycles"] < plain.totals["total_cycles"]


@pytest.mark.parametrize(("kv", "extra", "bits_per_element"), [
    ("nvfp4", {}, 4.5), ("mxfp4", {}, 4.25), ("mxfp8", {}, 8.25),
    ("mxfp4", {"kv_scales": {"per": "head", "scale_bits": 16}}, 4.25 + 16 / 128)])
def test_block_format_kv_caches_keep_their_block_scales(kv, extra, bits_per_element):
    """Issue 30.3: a block-format cache stores its block scales (plus any kv_scales on top); on a chip
    without such units it is dequantized before each attention product, so formats differ in cycles."""
    spec = load_model("llama-2-7b")
    step = spec.trace(Workload(batch=2, tokens=100, phase="decode", head="none"))
    pol = policy({"default": "fp16", "kv_cache": kv, **extra})
    prepared = Simulator(RAPID, pol).prepare(step)
    state = sum(t.stored_bytes for t in prepared.lowered.tensors.values() if t.kind == "state")
    assert state == 2 * 32 * 2 * 101 * 4096 * bits_per_element / 8
    res = simulate(step, RAPID, pol)
    dequant = res[res.name.str.endswith(".dequantize_b")]
    assert len(dequant) == 2 * 32 and (dequant.elements == 2 * 32 * 101 * 128).all()


def test_block_format_kv_caches_differ_in_cycles():
    """A memory-bound decode step reads 4.25, 4.5 and 8.25 bits per cached element."""
    spec = load_model("llama-2-7b")
    step = spec.trace(Workload(batch=4, tokens=2000, phase="decode", head="none"))
    tpu = load_hardware("tpu_v5e_like")
    cycles = [simulate(step, tpu, policy({"default": "native", "kv_cache": kv})).totals["total_cycles"]
              for kv in ("mxfp4", "nvfp4", "mxfp8")]
    assert cycles[0] < cycles[1] < cycles[2]


def test_a_float_kv_cache_takes_no_scales():
    spec = load_model("llama-2-7b")
    step = spec.trace(Workload(tokens=100, phase="decode", head="none"))
    prepared = Simulator(RAPID, policy({"default": "fp16", "kv_cache": "fp8_e4m3"})).prepare(step)
    state = sum(t.stored_bytes for t in prepared.lowered.tensors.values() if t.kind == "state")
    assert state == 2 * 32 * 101 * 4096  # one byte per element, nothing more


def test_single_block_ranges_and_per_side_settings_resolve():
    trace = load_model("bert-base").trace(Workload(tokens=128))
    pol = policy({"default": "int8", "ops": {"bmm_av": "int4", "q": {"weights": "int4", "activations": "int8"}},
                  "layers": {"3": "int2", "5-5": {"weights": "int4", "activations": "native"}}})
    by_name = {op.name: op for op in trace}
    q3, q4, q5 = (by_name[f"encoder.layer.{i}.attention.q"] for i in (3, 4, 5))
    av = by_name["encoder.layer.4.attention.av"]
    assert (pol.weight_precision(q3).name, pol.activation_precision(q3).name) == ("int2", "int2")
    assert (pol.weight_precision(q4).name, pol.activation_precision(q4).name) == ("int4", "int8")
    assert (pol.weight_precision(q5).name, pol.activation_precision(q5).name) == ("int4", "fp16")
    assert pol.activation_precision(av).name == "int4"  # a plain format at an op level is both sides'


def test_unstructured_and_outlier_storage_closed_forms():
    """Outliers: dims rows at their precision, each named by a ceil(log2 K)-bit index; the other rows
    kept where the mask says (nonzeros values) with a K' x N bitmap."""
    op = gemm(256, 64)
    pol = policy({"default": "int8", "weight_scales": {"per": "channel", "scale_bits": 16}},
                 sparsity={"weights": {"density": 0.25, "roles": ["ffn1"]}}, outliers={"dims": 8, "precision": "fp16"})
    storage = op_storage(op, pol, lambda asked: 1000 if asked is op else 0)
    assert storage.value_bits == 8 * 64 * 16 + 1000 * 8
    assert storage.index_bits == 8 * 8 + (256 - 8) * 64
    assert storage.scale_bits == 64 * 16 and storage.sparse == "unstructured"
    with pytest.raises(ValueError, match="unstructured sparsity needs the mask's non-zero count"):
        op_storage(op, pol)
    dense = op_storage(op, policy({"default": "int8"}, outliers={"dims": 8, "precision": "fp16"}))
    assert dense.value_bits == 8 * 64 * 16 + 248 * 64 * 8 and dense.index_bits == 8 * 8 and dense.sparse == "dense"
    assert (dense.layer, dense.group, dense.weight_precision, dense.bias_precision) == (0, "ffn", "int8", "int8")


def test_a_footprint_counts_mask_nonzeros_per_matrix_and_biases_as_dense():
    """Masked weights: the mask's non-zeros, once per matrix of a grouped op; biases add to the stored
    and the dense reference bits alike; no stored bits gives a NaN ratio, not a division error."""
    import numpy as np

    from simulator.formats.storage import mask_nonzeros, summarize
    from workloads.ops import Trace

    op = replace(gemm(8, 4, batch=2), bias_params=4)
    mask = np.zeros((4, 8))
    mask[:, :3] = 1  # 12 kept of 32 per matrix
    pol = policy({"default": "int8", "bias": "int32"}, sparsity={"weights": {"mask": "m.npz", "roles": ["ffn1"]}})
    nonzeros = mask_nonzeros(lambda asked: mask if asked.name == op.name else None)
    result = parameter_storage(Trace("toy", (op,)), pol, nonzeros)
    row = result.ops[0]
    assert (result.model, result.config) == ("toy", "t")
    assert row.value_bits == 2 * 12 * 8 and row.index_bits == 2 * 8 * 4 and row.bias_bits == 4 * 32
    total = summarize([row])
    assert total.dense_bits == 2 * 32 * 8 + 4 * 32 and total.bits == row.weight_bits + 4 * 32
    assert summarize([row], include_bias=False).dense_bits == 2 * 32 * 8
    assert math.isnan(summarize([]).ratio(100))


@pytest.mark.parametrize(("scales", "expected"), [
    ({"per": "group", "group_size": 128, "scale_bits": 16, "zero_point_bits": 4}, 8 * 20),  # ceil(1000/128) = 8
    ({"per": "channel", "scale_bits": 16}, 16),  # a vector op's parameters: one tensor, one scale
    ({"per": "tensor", "scale_bits": 32}, 32),
])
def test_parameters_outside_matrices_take_one_tensors_scales(scales, expected):
    gains = Op("gains", 0, "layernorm", "norm", "vector", elements=10, weight_params=1000)
    storage = op_storage(gains, policy({"default": "int8", "weight_scales": scales}))
    assert storage.value_bits == 8000 and storage.scale_bits == expected


# ---- bad input ----

@pytest.mark.parametrize(("precision", "message"), [
    ({"default": "int3x"}, "known: fp32, fp16, bf16, fp8_e4m3, fp8_e5m2, intN (N in 2..16, or 32), mxfp8, "
                           "mxfp8_e5m2, mxfp6"),
    ({"weights": "int4", "activations": "native", "weight_scales": {"per": "group", "group_size": 0}},
     "group_size must be between 1 and 2147483647"),
    ({"weights": "int4", "activations": "native", "weight_scales": {"per": "group", "group_size": 2**31}},
     "31-bit"),
    ({"default": "fp8_e4m3", "weight_scales": {"zero_point_bits": 4}}, "take no zero point"),
    ({"default": "mxfp4", "weight_scales": {"per": "group", "group_size": 64}}, "mxfp4 blocks are 32"),
    ({"default": "int8", "kv_scales": {"per": "head"}}, "give kv_cache too"),
    ({"default": "int8", "kv_cache": "fp8_e4m3", "kv_scales": {"zero_point_bits": 4}}, "takes no zero point"),
    ({"weights": "int4"}, "give default, or both weights and activations"),
    ({"default": "int8", "ops": {"bmm_qk": {"weights": "int4"}}}, "has no weights"),
    ({"default": "int8", "ops": {"q": "int5x"}}, "precision.ops: unknown format 'int5x'"),
    ({"default": "int8", "kv_cache": "native"}, "unknown format 'native'"),  # the cache names a format
    ({"default": "int8", "layers": {"4-2": "int4"}}, "layer range '4-2' ends before it starts"),
    ({"default": "int8", "layers": {"a-b": "int4"}}, "layer range 'a-b' is not of the form A-B or A"),
    ({"default": "int8", "layers": {"0-3": {"weights": "int4", "activations": "int8"}, "2-5": "int2"}},
     "overlap with different precisions (weights int4/activations int8, int2)"),
])
def test_bad_precision_settings_are_refused(precision, message):
    with pytest.raises(InputError, match=re.escape(message)):
        policy_from_dict({"name": "t", "hardware": "rapid_like", "precision": precision})


def test_settings_that_do_not_apply_are_refused():
    bert = load_model("bert-base").trace(Workload(tokens=16))
    with pytest.raises(InputError, match="precision.kv_cache does not apply"):
        simulate(bert, RAPID, load_run_config("w4a16_g128_kv8"))
    with pytest.raises(InputError, match="outliers.dims 768 must be below"):
        simulate(bert, RAPID, policy({"default": "int8"}, outliers={"dims": 768}))
    with pytest.raises(InputError, match="weight_scales does not apply"):
        simulate(bert, RAPID, policy({"default": "fp16", "weight_scales": {"per": "tensor"}}))
    with pytest.raises(InputError, match="per token does not apply"):
        simulate(bert, RAPID, policy({"default": "fp16", "activation_scales": {"per": "token"}}))


# ---- sparsity patterns the PEs run at another pattern's rate ----

@pytest.mark.parametrize(("pattern", "runs_as"), [("1:4", "2:4"), ("2:8", "2:4"), ("1:8", "2:4"), ("2:4", "2:4"),
                                                  ("4:8", None), ("3:4", None), ("1:6", None)])
def test_patterns_at_most_as_dense_as_a_skipped_one_run_at_its_rate(pattern, runs_as):
    from simulator.formats.sparsity import SparsityPattern

    chosen = RAPID.sparse.skip_pattern(SparsityPattern.parse(pattern))
    assert (str(chosen) if chosen else None) == runs_as


def test_a_2_8_config_on_a_2_4_pe_takes_the_2_4_cycles_and_keeps_its_own_storage():
    trace = load_model("bert-base").trace(Workload(tokens=128))
    runs = {}
    for pattern in ("2:4", "2:8"):
        rules = policy({"default": "int8"}, sparsity={"weights": {"pattern": pattern}})
        runs[pattern] = simulate(trace, RAPID, rules)
    linear = {p: r[r.category == "linear"] for p, r in runs.items()}
    assert list(linear["2:8"].compute_cycles) == list(linear["2:4"].compute_cycles)
    assert (linear["2:8"].weight_bits < linear["2:4"].weight_bits).all()  # 2 x (8 + 3) / 8 < 2 x (8 + 2) / 4
    assert any("skips 2:4, not 2:8" in note for note in runs["2:8"].notes)


@pytest.mark.parametrize("sparsity", [{"attention": {"keys": "4:4"}}, {"weights": {"pattern": "2:2"}}])
def test_a_pattern_that_prunes_nothing_is_refused(sparsity):
    """Issue 30.10: keys 4:4 was accepted with the note 'cannot skip 4:4'."""
    with pytest.raises(InputError, match="prunes nothing"):
        policy_from_dict({"name": "x", "hardware": "rapid_like", "precision": {"default": "int8"},
                          "sparsity": sparsity})


def test_gating_hardware_is_not_said_to_skip():
    """Issue 30.10: with sparse.mode: gate the fallback note said the hardware 'skips'."""
    from simulator.plan.binding import bind

    gate = load_hardware("rapid_like").model_copy(update={"sparse": RAPID.sparse.model_copy(
        update={"mode": "gate"})})
    plan = bind(policy({"default": "int8"}, sparsity={"weights": {"pattern": "1:4"}}), gate)
    assert plan.notes and all("skip" not in note for note in plan.notes)
    assert any("gates 2:4, not 1:4" in note for note in plan.notes)


def test_hardware_listing_a_pattern_that_prunes_nothing_is_refused():
    from conftest import preset_with

    with pytest.raises(ValueError, match="prunes nothing"):
        preset_with("rapid_like", sparse={"patterns": ["4:4"]})
