"""Bit-exact storage: the paper's and GPUSQ's compression figures, and hand computations."""

import json

import pytest
from cli_helpers import accelsim

from simulator.formats.storage import index_bits_per_value, parameter_storage
from simulator.spec.run_config import policy_from_dict
from workloads.models import load_model

PAPER_MODELS = ("bert-base", "wav2vec2-large", "vit-base")
SIX = ["q", "k", "v", "attn_out", "ffn1", "ffn2"]


def policy(default, pattern=None, **precision):
    data = {"name": "t", "hardware": "rapid_like", "precision": {"default": default, **precision}}
    if pattern:
        data["sparsity"] = {"weights": {"pattern": pattern, "roles": SIX}}
    return policy_from_dict(data)


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_paper_memory_savings_exact(model):
    trace = load_model(model).trace()
    int8_sp = parameter_storage(trace, policy("int8", "2:4")).pruned_linear
    int4_sp = parameter_storage(trace, policy("int4", "2:4")).pruned_linear
    dense_int8 = parameter_storage(trace, policy("int8")).pruned_linear
    dense_int4 = parameter_storage(trace, policy("int4")).pruned_linear
    # Closed forms: 2:4 keeps 2 values + 2-bit indices per 4 weights -> (b + 2) / 2 bits per weight.
    assert dense_int8.bits / int8_sp.bits == pytest.approx(1.6, abs=1e-12)
    assert dense_int4.bits / int4_sp.bits == pytest.approx(4 / 3, abs=1e-12)
    assert int8_sp.ratio(32 * int8_sp.params) == pytest.approx(6.4, abs=1e-12)
    assert int4_sp.ratio(32 * int4_sp.params) == pytest.approx(32 / 3, abs=1e-12)
    # The same four figures through the dict the CLI prints.
    assert parameter_storage(trace, policy("int8", "2:4")).as_dict()["pruned_linear"]["compression_vs_dense"] == 1.6
    # Scale factors (16 bits per output channel) are extra, and reported apart.
    channels = sum(op.n * op.batch for op in trace if op.role in SIX)
    assert int8_sp.scale_bits == 16 * channels
    assert int8_sp.ratio(32 * int8_sp.params, with_scales=True) < 6.4


def test_gpusq_storage_fractions_of_fp16():
    trace = load_model("bert-base").trace()
    fp16_dense = parameter_storage(trace, policy("fp16")).pruned_linear.bits
    assert parameter_storage(trace, policy("fp16", "2:4")).pruned_linear.bits / fp16_dense == 0.5625
    assert parameter_storage(trace, policy("int8", "2:4")).pruned_linear.bits / fp16_dense == 0.3125


@pytest.mark.parametrize(("model", "hf_params"), [("bert-base", 108_893_186), ("vit-base", None),
                                                  ("wav2vec2-large", None)])
def test_whole_model_params_equal_trace_and_hf(model, hf_params):
    trace = load_model(model).trace()
    total = parameter_storage(trace, policy("int4", "2:4")).total
    assert total.params == trace.params  # test_hf_trace checks trace.params == HF num_parameters()
    if hf_params:
        assert total.params == hf_params


def test_mixed_precision_layers_hand_computed():
    """wav2vec2-large: blocks 0-7 at int2, 8-23 at int4, everything outside blocks at fp16."""
    trace = load_model("wav2vec2-large").trace()
    mixed = policy_from_dict({"name": "mixed", "hardware": "rapid_like", "precision": {
        "default": "fp16", "layers": {"0-7": "int2", "8-23": "int4"}, "scale_bits": 0}})
    hidden, ffn = 1024, 4096
    block_weights = 4 * hidden * hidden + 2 * hidden * ffn
    block_biases = 4 * hidden + ffn + hidden
    block_norms = 2 * 2 * hidden  # two LayerNorms with weight and bias
    per_block = block_weights + block_biases + block_norms
    outside = trace.params - 24 * per_block
    expected = 8 * per_block * 2 + 16 * per_block * 4 + outside * 16
    assert parameter_storage(trace, mixed).total.bits == expected


def test_per_group_config_hand_computed():
    """bert-base: FFN weights (and biases) at int8, everything else fp32; scales 16 bits per channel."""
    trace = load_model("bert-base").trace()
    ffn_int8 = policy_from_dict({"name": "ffn8", "hardware": "rapid_like",
                                 "precision": {"default": "fp32", "groups": {"ffn": "int8"}}})
    hidden, ffn = 768, 3072
    ffn_params = 12 * (2 * hidden * ffn + ffn + hidden)
    expected_bits = ffn_params * 8 + (trace.params - ffn_params) * 32
    result = parameter_storage(trace, ffn_int8).total
    assert result.bits == expected_bits
    assert result.scale_bits == 12 * (ffn + hidden) * 16  # one scale per output channel of ffn1, ffn2


def test_bias_precision_and_outliers_hand_computed():
    trace = load_model("bert-base").trace()
    config = policy_from_dict({"name": "o", "hardware": "rapid_like",
                               "precision": {"default": "int4", "bias": "int32", "scale_bits": 0},
                               "sparsity": {"weights": {"pattern": "2:4", "roles": ["ffn1"]}},
                               "outliers": {"dims": 8, "precision": "fp16"}})
    row = next(r for r in parameter_storage(trace, config).ops if r.name == "encoder.layer.0.ffn.ffn1")
    k, n = 768, 3072
    kept = (k - 8) // 4 * 2 * n
    assert row.value_bits == 8 * n * 16 + kept * 4
    assert row.index_bits == 8 * 10 + kept * 2  # ceil(log2 768) = 10 bits per outlier dimension
    assert row.bias_bits == n * 32
    assert index_bits_per_value(4) == 2 and index_bits_per_value(8) == 3 and index_bits_per_value(2) == 1


def test_nm_tail_when_m_does_not_divide_k():
    trace = load_model("bert-base").trace()
    row = next(r for r in parameter_storage(trace, policy("int8", "3:7")).ops if r.role == "q")
    full, tail = divmod(768, 7)
    kept = (3 * full + min(3, tail)) * 768
    assert row.value_bits == kept * 8 and row.index_bits == kept * 3




def test_memory_cli_json(tmp_path):
    result = accelsim("memory", "configs/int4_sp.yaml", "--model", "vit-base", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["pruned_linear"]["compression_vs_fp32"] == pytest.approx(32 / 3)
    assert data["pruned_linear"]["compression_vs_dense"] == pytest.approx(4 / 3)
    assert {"params", "bits", "compression_vs_fp32", "compression_vs_fp16", "compression_vs_dense"} <= set(
        data["total"])
    assert set(data["groups"]) >= {"attention", "ffn", "embedding", "norm"}
    table = accelsim("memory", "configs/int8_sp.yaml", "--model", "bert-base")
    assert table.returncode == 0 and "pruned linear" in table.stdout and "6.400x" in table.stdout
