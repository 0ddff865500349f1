"""The plan: a run config bound to a hardware, whose decisions the engine, footprint and run's report share."""

from __future__ import annotations

import json

import pytest
from conftest import preset_with

from simulator import Simulator, footprint, load_hardware, load_model, load_run_config
from simulator.plan.binding import bind
from workloads.models import Workload

SHIPPED = ["fp16", "fp32", "fp8", "int4", "int4_sp", "int8", "int8_sp", "int8_sp_attn", "mxfp4", "native", "nvfp4",
           "w4a16_g128", "w4a16_g128_kv4", "w4a16_g128_kv8", "w4a16_g128_sp", "w4a8_g128", "w8a8"]


def engine_stored_bits(simulator: Simulator, trace) -> int:
    """What the simulation stores and streams: every op's parameters as the engine prices them."""
    return sum(s.weight_bits + s.scale_bits + s.bias_bits for s in map(simulator.storage, trace))


def test_shipped_configs_are_the_whole_list():
    from simulator.spec.shipped import CONFIG_DIR

    assert sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem != "reproduce") == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_footprint_of_every_shipped_config_through_the_api(name):
    """Wrong answer 2 (issue 25): a run config is bound to the hardware it names, as `accelsim memory` does."""
    trace = load_model("gpt2").trace(Workload(tokens=16, phase="prefill"))  # a pass with a KV cache
    policy = load_run_config(name)
    via_api = footprint(trace, policy)
    simulator = Simulator(load_hardware(policy.config.hardware), policy)
    assert via_api.total.bits_with_scales == engine_stored_bits(simulator, trace)


def test_run_reports_the_weights_it_streams_on_a_chip_that_cannot_skip_them(run_cli):
    """Wrong answer 1 (issue 25): tpu_v1_like skips no N:M pattern and has no decompressor, so int8_sp's
    pruned weights are stored and streamed dense: 8 bits a weight, exactly as int8."""
    argv = ["configs/int8_sp.yaml", "--model", "bert-base", "--hardware", "tpu_v1_like", "--format", "json"]
    summary = json.loads(run_cli("run", *argv))
    memory = summary["memory"]
    assert memory["weights_kept_compressed"] is False
    linear = memory["pruned_linear"]
    assert linear["bits"] == 8 * linear["params"] and linear["compression_vs_dense"] == 1.0
    trace = load_model("bert-base").trace(Workload())
    simulator = Simulator(load_hardware("tpu_v1_like"), load_run_config("int8_sp"))
    assert memory["total"]["bits_with_scales"] == engine_stored_bits(simulator, trace)
    dense = json.loads(run_cli("run", "configs/int8.yaml", *argv[1:]))["memory"]
    assert dense["weights_kept_compressed"] is None
    assert memory["total"]["bits_with_scales"] == dense["total"]["bits_with_scales"]


@pytest.mark.parametrize(("hardware", "compressed"), [
    ("rapid_like", True),  # skips 2:4
    ("tpu_v1_like", False),  # skips nothing, no decompressor
])
def test_pruned_weights_are_stored_compressed_only_where_the_chip_reads_them_so(hardware, compressed):
    trace = load_model("bert-base").trace(Workload())
    plan = bind(load_run_config("int8_sp"), load_hardware(hardware))
    assert plan.weights_compressed is compressed
    linear = plan.footprint(trace).pruned_linear
    assert linear.bits == (5 if compressed else 8) * linear.params  # 2:4 int8: (8 + 2) / 2 bits a weight
    simulator = Simulator(plan.hardware, plan.policy)
    assert plan.footprint(trace).total.bits_with_scales == engine_stored_bits(simulator, trace)


def test_a_decompressor_keeps_weights_the_pes_cannot_skip_compressed():
    chip = preset_with("tpu_v1_like", sparse={"decompressor": True})
    plan = bind(load_run_config("int8_sp"), chip)
    assert not plan.skips and plan.weights_compressed
    assert any("decompressor" in note for note in plan.notes)
    linear = plan.footprint(load_model("bert-base").trace(Workload())).pruned_linear
    assert linear.bits == 5 * linear.params


def test_the_simulator_runs_the_plan_bind_makes():
    policy, chip = load_run_config("int8_sp"), load_hardware("tpu_v1_like")
    simulator = Simulator(chip, policy)
    assert simulator.plan == bind(policy, chip)
    assert simulator.notes[: len(simulator.plan.notes)] == list(simulator.plan.notes)


def test_footprint_of_a_plan_refuses_a_second_hardware():
    from workloads.errors import InputError

    plan = bind(load_run_config("int8"), load_hardware("rapid_like"))
    with pytest.raises(InputError, match="already bound"):
        footprint(load_model("bert-base").trace(Workload()), plan, hardware=load_hardware("tpu_v1_like"))


def sparse_policy(weights: dict | None = None, attention: dict | None = None):
    from simulator.spec.run_config import policy_from_dict

    sparsity = {key: value for key, value in (("weights", weights), ("attention", attention)) if value}
    return policy_from_dict({"name": "p", "hardware": "rapid_like", "precision": {"default": "int8"},
                             "sparsity": sparsity})


def test_a_dense_config_binds_without_a_decision_to_report():
    plan = bind(load_run_config("int8"), load_hardware("tpu_v1_like"))
    assert plan.skips and plan.skip_pattern is None and plan.notes == ()
    assert plan.storage is plan.policy and not plan.weights_compressed and not plan.masked


def test_a_pattern_runs_at_the_pattern_the_pes_skip_and_says_so():
    plan = bind(sparse_policy({"pattern": "1:4", "roles": ["ffn1"]}), load_hardware("rapid_like"))
    assert plan.skips and str(plan.skip_pattern) == "2:4" and plan.weights_compressed
    assert plan.notes == ("hardware rapid_like skips 2:4, not 1:4: the 1:4 weights run at the 2:4 rate "
                          "(MACs counted as issued)",)
    same = bind(sparse_policy({"pattern": "2:4", "roles": ["ffn1"]}), load_hardware("rapid_like"))
    assert same.notes == () and str(same.skip_pattern) == "2:4"


@pytest.mark.parametrize(("hardware", "skips"), [("rapid_like", True), ("tpu_v1_like", False)])
def test_unstructured_weights_are_skipped_where_the_chip_skips_zeros(hardware, skips):
    plan = bind(sparse_policy({"density": 0.5, "roles": ["ffn1"]}), load_hardware(hardware))
    assert plan.skip_pattern is None and plan.skips is skips and plan.masked is skips
    assert plan.weights_compressed is skips  # no decompressor on either preset
    assert bool(plan.notes) is not skips


def test_compressed_pattern_names_the_kept_pattern_of_skipped_pruned_weights_only():
    trace = load_model("bert-base").trace(Workload(tokens=8))
    ffn1 = next(op for op in trace if op.role == "ffn1")
    unpruned = next(op for op in trace if op.role != "ffn1" and op.has_weight_operand and op.weight_params)
    policy = sparse_policy({"pattern": "1:4", "roles": ["ffn1"]})
    skipping = bind(policy, load_hardware("rapid_like"))
    assert str(skipping.compressed_pattern(ffn1)) == "1:4"  # the weights keep their own pattern
    assert skipping.compressed_pattern(unpruned) is None  # not pruned
    assert bind(policy, load_hardware("tpu_v1_like")).compressed_pattern(ffn1) is None  # computed dense


def test_attention_sparsity_gives_the_pattern_its_rate_and_a_note():
    trace = load_model("bert-base").trace(Workload(tokens=8))
    bmm_av = next(op for op in trace if op.role == "bmm_av")
    bmm_qk = next(op for op in trace if op.role == "bmm_qk")
    policy = sparse_policy(attention={"probabilities": "2:8"})
    pattern, runs_at, note = bind(policy, load_hardware("rapid_like")).attention_sparsity(bmm_av)
    assert (str(pattern), str(runs_at)) == ("2:8", "2:4")
    assert note == ("hardware rapid_like skips 2:4, not 2:8: the 2:8 attention operands run at the 2:4 rate "
                    "(MACs counted as issued)")
    assert bind(policy, load_hardware("rapid_like")).attention_sparsity(bmm_qk) == (None, None, None)
    exact = bind(sparse_policy(attention={"probabilities": "2:4"}), load_hardware("rapid_like"))
    assert tuple(map(str, exact.attention_sparsity(bmm_av))) == ("2:4", "2:4", "None")
    dense = bind(policy, load_hardware("tpu_v1_like")).attention_sparsity(bmm_av)
    assert dense[:2] == (None, None) and dense[2] is not None and "cannot skip 2:8" in dense[2]


def test_footprint_counts_mask_nonzeros_through_the_plan():
    import numpy as np

    trace = load_model("bert-base").trace(Workload(tokens=8))
    plan = bind(sparse_policy({"density": 0.5, "roles": ["ffn1"]}), load_hardware("rapid_like"))
    half = plan.footprint(trace, lambda op: op.k * op.n // 2 * op.batch)
    quarter = plan.footprint(trace, lambda op: op.k * op.n // 4 * op.batch)
    assert half.pruned_linear.bits > quarter.pruned_linear.bits
    assert footprint(trace, plan, lambda op: int(np.int64(op.k * op.n // 4))).pruned_linear.bits == \
        quarter.pruned_linear.bits


def test_what_a_chip_that_cannot_skip_does_with_the_weights_is_said_in_one_note():
    policy = load_run_config("int8_sp")
    dense = bind(policy, load_hardware("tpu_v1_like"))
    assert dense.notes == ("hardware tpu_v1_like cannot skip 2:4 sparsity (sparse.patterns: none; unstructured: "
                           "false): it computes dense, and with no decompressor, its weights are kept and streamed "
                           "dense",)
    decompressed = bind(policy, preset_with("tpu_v1_like", sparse={"decompressor": True}))
    assert decompressed.notes == ("hardware tpu_v1_like cannot skip 2:4 sparsity (sparse.patterns: none; "
                                  "unstructured: false): it computes dense, and its weights stream compressed "
                                  "through the decompressor",)
    masks = bind(sparse_policy({"density": 0.5, "roles": ["ffn1"]}), load_hardware("tpu_v1_like"))
    assert masks.notes[0].startswith("hardware tpu_v1_like cannot skip unstructured sparsity")


def test_footprint_of_a_run_config_passes_the_mask_counts_on():
    trace = load_model("bert-base").trace(Workload(tokens=8))
    policy = sparse_policy({"density": 0.5, "roles": ["ffn1"]})
    chip = load_hardware("rapid_like")
    quarter = footprint(trace, policy, lambda op: op.k * op.n // 4 * op.batch, hardware=chip)
    assert quarter.pruned_linear.bits == bind(policy, chip).footprint(
        trace, lambda op: op.k * op.n // 4 * op.batch).pruned_linear.bits
    assert quarter.pruned_linear.bits < footprint(trace, policy, lambda op: op.k * op.n * op.batch,
                                                  hardware=chip).pruned_linear.bits
