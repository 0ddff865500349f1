"""The plan: a run config bound to a hardware, whose decisions the engine, footprint and run's report share."""

from __future__ import annotations

import json

import pytest
from conftest import preset_with

from simulator import Simulator, footprint, load_hardware, load_model, load_run_config
from simulator.plan.binding import bind
from workloads.models import Workload

SHIPPED = ["fp16", "fp32", "fp8", "int4", "int4_sp", "int8", "int8_sp", "int8_sp_attn", "mxfp4", "nvfp4",
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
