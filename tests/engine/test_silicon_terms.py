"""The cost terms measured silicon adds (docs/hardware.md, "What silicon adds"): each has its closed form,
changes nothing when unset, and never makes a run slower when it improves."""

from __future__ import annotations

import math

import pytest
from conftest import preset_with

from simulator.analysis.generation import generate, generation_summary
from simulator.engine import Simulator, simulate
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_run_config
from workloads.builder import OpBuilder
from workloads.errors import InputError
from workloads.models import Workload, load_model

INT8 = load_run_config("configs/int8.yaml")


def one_gemm(m: int, k: int, n: int):
    builder = OpBuilder()
    builder.input("x", m * k)
    builder.gemm("op", 0, "ffn1", "ffn", m, k, n, bias=False)
    return builder.build_trace("one", {"batch": 1})


@pytest.mark.parametrize("efficiency", [1.0, 0.8, 0.37])
def test_a_sustained_fraction_of_the_peak_moves_every_transfer(efficiency):
    """A weight-streaming decode product is memory bound: its transfer takes ceil(bytes / (peak x fraction))
    cycles, and the run is never shorter than its traffic at that rate."""
    hw = preset_with("tpu_v5e_like", memory={"dram_efficiency": efficiency})
    results = simulate(one_gemm(1, 4096, 4096), hw, INT8)
    row = results.iloc[0]
    rate = hw.memory.dram_bytes_per_cycle * efficiency
    assert hw.memory.sustained_bytes_per_cycle == pytest.approx(rate)
    assert row.transfer_cycles == math.ceil(row.dram_bytes / rate)
    assert results.totals.dram_cycles == math.ceil(results.dram_bytes.sum() / rate)
    assert results.totals.total_cycles >= results.totals.dram_cycles


def test_more_bandwidth_efficiency_never_slows_a_run():
    trace = load_model("gpt2").trace(Workload(tokens=64))
    totals = [simulate(trace, preset_with("tpu_v5e_like", memory={"dram_efficiency": e}), INT8).totals.total_cycles
              for e in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[-1]


def test_unset_terms_change_nothing():
    trace = load_model("bert-base").trace(Workload(tokens=32))
    plain = simulate(trace, load_hardware("rapid_like"), INT8)
    spelled = preset_with("rapid_like", memory={"dram_efficiency": 1.0}, dispatch={"kernel_us": 0.0,
                                                                                  "execution": "per_op"})
    assert simulate(trace, spelled, INT8).to_csv(index=False) == plain.to_csv(index=False)
    assert (plain.launch_cycles == 0).all() and plain.totals.launch_cycles == 0


def test_a_runs_cycles_are_its_busiest_resource_plus_its_launches():
    from simulator.engine.results import record_totals, run_cycles

    hw = preset_with("rapid_like", memory={"dram_efficiency": 0.5})
    bw = hw.memory.sustained_bytes_per_cycle
    assert run_cycles(100, 50, 0, hw) == 150  # no overlap: the units take turns
    assert run_cycles(100, 50, int(bw * 1000), hw) == 1000 and run_cycles(100, 50, 1, hw) == 150
    assert run_cycles(100, 50, 0, hw, 7) == 157
    trace = load_model("bert-base").trace(Workload(tokens=32))
    launched = preset_with("rapid_like", dispatch={"kernel_us": 3.0, "execution": "per_op"})
    simulator = Simulator(launched, INT8)
    records, _, _ = simulator.run_records(trace)
    assert record_totals(records, launched)[0] == simulator.run(trace).totals.total_cycles


def test_per_op_execution_launches_every_op_that_works_and_is_not_fused():
    trace = load_model("bert-base").trace(Workload(tokens=32))
    base = simulate(trace, load_hardware("rapid_like"), INT8)
    hw = preset_with("rapid_like", dispatch={"kernel_us": 12.5, "execution": "per_op"})
    launched = simulate(trace, hw, INT8)
    per_kernel = math.ceil(12.5 * hw.array.clock_mhz)
    kernels = ((base.fused_into == "") & ((base.total_cycles > 0) | (base.dram_bytes > 0))).sum()
    assert (base.fused_into != "").any()  # fused steps exist, and launch nothing
    assert launched.totals.launch_cycles == kernels * per_kernel
    assert launched.totals.total_cycles == base.totals.total_cycles + kernels * per_kernel
    assert (launched[launched.fused_into != ""].launch_cycles == 0).all()
    columns = [c for c in base.columns if c != "launch_cycles"]
    assert launched[columns].to_csv(index=False) == base[columns].to_csv(index=False)  # nothing else moves


def test_a_compiled_graph_launches_once_per_pass_and_fewer_kernels_never_slow_a_run():
    trace = load_model("bert-base").trace(Workload(tokens=32))
    graph = simulate(trace, preset_with("rapid_like", dispatch={"kernel_us": 12.5}), INT8)
    per_op = simulate(trace, preset_with("rapid_like", dispatch={"kernel_us": 12.5, "execution": "per_op"}), INT8)
    base = simulate(trace, load_hardware("rapid_like"), INT8)
    per_kernel = math.ceil(12.5 * load_hardware("rapid_like").array.clock_mhz)
    assert graph.totals.launch_cycles == per_kernel and graph.launch_cycles.iloc[0] == per_kernel
    assert base.totals.total_cycles < graph.totals.total_cycles < per_op.totals.total_cycles


def test_every_decode_step_is_one_launch_of_its_graph():
    spec = load_model("gpt2")
    hw = preset_with("tpu_v5e_like", dispatch={"kernel_us": 100.0})
    plain = generation_summary(generate(spec, Workload(tokens=16), 4, Simulator(load_hardware("tpu_v5e_like"),
                                                                                  INT8)), load_hardware("tpu_v5e_like"))
    launched = generation_summary(generate(spec, Workload(tokens=16), 4, Simulator(hw, INT8)), hw)
    launch_ms = math.ceil(100.0 * hw.array.clock_mhz) / (hw.array.clock_mhz * 1e3)
    assert launched["ttft_ms"] == pytest.approx(plain["ttft_ms"] + launch_ms)
    assert launched["tpot_ms"] == pytest.approx(plain["tpot_ms"] + launch_ms)


@pytest.mark.parametrize(("section", "fields", "refusal"), [
    ("memory", {"dram_efficiency": 0.0}, "greater than 0"),
    ("memory", {"dram_efficiency": 1.5}, "less than or equal to 1"),
    ("dispatch", {"kernel_us": -1.0}, "greater than or equal to 0"),
    ("dispatch", {"execution": "eager"}, "'graph' or 'per_op'"),
    ("dispatch", {"launch_us": 1.0}, "launch_us"),
])
def test_a_fraction_outside_0_1_or_a_negative_cost_is_refused(section, fields, refusal):
    with pytest.raises((InputError, ValueError), match=refusal):
        preset_with("tpu_v5e_like", **{section: fields})


def test_a_preset_names_only_fields_it_has_as_fitted():
    assert preset_with("tpu_v5e_like", fitted=["memory.dram_efficiency", "sfu.cycles_per_element.softmax"]).fitted
    for wrong in ("memory.dram_eficiency", "sfu.cycles_per_element.nosuchop", "dispatch.kernel_us.more"):
        with pytest.raises(ValueError, match=f"fitted: '{wrong}' names no field of the preset"):
            preset_with("tpu_v5e_like", fitted=[wrong])


@pytest.mark.parametrize(("k", "n"), [(300, 300), (256, 512), (1, 257)])
def test_whole_weight_tiles_move_the_padded_matrix(k, n):
    """tpu_v1_like moves weights as whole 256 x 256 int8 tiles: a K x N weight matrix's stored bytes (its
    values and their scales) grow by the padding of K and N to whole tiles (the field off: its own bytes);
    nothing else moves more, and the timing is the same."""
    m = 64
    tiled = simulate(one_gemm(m, k, n), load_hardware("tpu_v1_like"), INT8)
    plain = simulate(one_gemm(m, k, n), preset_with("tpu_v1_like", memory={"whole_weight_tiles": False}), INT8)
    own = int(plain[plain.unit == "array"].dram_bytes.sum())
    assert k * n < own <= k * n + 4 * n  # the int8 values and a scale per column
    padded = -(-k // 256) * 256 * -(-n // 256) * 256
    assert int(tiled[tiled.unit == "array"].dram_bytes.sum()) == -(-own * padded // (k * n))
    assert tiled[tiled.unit != "array"].dram_bytes.tolist() == plain[plain.unit != "array"].dram_bytes.tolist()
    assert tiled.compute_cycles.tolist() == plain.compute_cycles.tolist()

