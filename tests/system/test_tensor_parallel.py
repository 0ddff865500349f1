"""Tensor parallelism over a system of chips: the sharded trace, the collectives' closed forms, conservation
and monotonicity, and bad plans refused (workloads/parallel.py, engine/collectives.py, spec/system.py)."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
from cli_helpers import assert_one_line_error

from simulator.analysis.generation import generate, generation_summary
from simulator.engine import Simulator
from simulator.engine.collectives import collective_cost, group_rings
from simulator.spec.run_config import load_run_config
from simulator.spec.system import Interconnect, System, load_target
from workloads.errors import InputError
from workloads.models import Workload, load_model
from workloads.parallel import TensorParallel

INT8 = load_run_config("int8")


def system(chips: int, topology: str = "switch", shape: tuple[int, int] | None = None, gb: float = 50.0,
           latency_us: float = 1.0, chip: str = "tpu_v5e_like") -> System:
    links = {"ring": 2, "torus_2d": 4}.get(topology, 1)
    return System(name=f"test_{chips}", chip=chip, chips=chips,
                  interconnect=Interconnect(topology=topology, shape=shape, links_per_chip=links, link_gb_per_s=gb,
                                            link_latency_us=latency_us, link_pj_per_bit=5.0))


def run_on(spec_name: str, workload: Workload, sys: System | None, chip: str = "tpu_v5e_like"):
    hardware = load_target(chip).hardware
    return Simulator(hardware, INT8, system=sys).run(load_model(spec_name).trace(workload))


def test_one_chip_is_todays_trace_and_run():
    """tp = 1 is no split: the same ops, the same cycles (the golden files pin the rest)."""
    spec = load_model("llama-2-7b")
    assert spec.trace(Workload(tokens=32, tp=1)).ops == spec.trace(Workload(tokens=32)).ops
    assert spec.resolve(Workload(tp=1)).tp is None


def test_per_chip_weights_follow_megatrons_split():
    """Llama-2-70B over 8 chips: every product's split weights, norms replicated (closed form from the config)."""
    cfg = load_model("llama-2-70b").config
    h, inner, layers, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"]
    for tp in (2, 4, 8):
        per_layer = h * h // tp + 2 * h * hd * kv // tp + h * h // tp + 3 * h * inner // tp + 2 * h
        expected = 2 * h * -(-vocab // tp) + layers * per_layer + h
        trace = load_model("llama-2-70b").trace(Workload(tokens=8, tp=tp))
        assert trace.params == expected
        # summed over the chips: the model's, plus the replicated norms
        assert tp * trace.params == load_model("llama-2-70b").trace(Workload(tokens=8)).params + (tp - 1) * (
            2 * layers + 1) * h


def test_grouped_kv_heads_are_replicated_when_fewer_than_chips():
    """Llama-2-70B has 8 key/value heads: over 16 chips each holds one (every head on two chips)."""
    trace = load_model("llama-2-70b").trace(Workload(tokens=8, tp=16))
    k = next(op for op in trace if op.name == "layers.0.self_attn.k")
    q = next(op for op in trace if op.name == "layers.0.self_attn.q")
    assert (k.n, q.n) == (128, 4 * 128)
    qk = next(op for op in trace if op.name == "layers.0.self_attn.qk")
    assert (qk.batch, qk.m) == (1, 4 * 8)  # one key/value head, its 4 query heads stacked as rows


def test_work_is_conserved_over_the_chips():
    """Llama-2-7B (32 heads and key/value heads, a vocabulary 4 divides): the chips' MACs sum to one chip's."""
    spec = load_model("llama-2-7b")
    for phase in ("prefill", "decode"):
        whole = spec.trace(Workload(tokens=64, phase=phase, batch=2))
        for tp in (2, 4):
            assert tp * spec.trace(Workload(tokens=64, phase=phase, batch=2, tp=tp)).macs == whole.macs


def test_collectives_per_block_and_their_bytes():
    """Two all-reduces per block of the tokens' hidden states, one after the embedding, one all-gather of the
    logits: each chip ends with the whole tensor."""
    trace = load_model("llama-2-7b").trace(Workload(tokens=64, tp=4))
    collectives = [op for op in trace if op.kind == "collective"]
    assert len(collectives) == 2 * 32 + 2
    reduces = [op for op in collectives if op.role == "all_reduce"]
    assert {op.elements for op in reduces} == {64 * 4096} and {op.ranks for op in reduces} == {4}
    (gather,) = [op for op in collectives if op.role == "all_gather"]
    assert gather.elements == 64 * 32000 and gather.name == "lm_head.all_gather"
    residual = trace.ops[trace.ops.index(reduces[1]) + 1]
    assert residual.role == "add" and residual.reads[0] == reduces[1].name


@pytest.mark.parametrize("chips", [2, 4, 8])
def test_ring_all_reduce_is_the_closed_form(chips):
    """Behind a switch: 2 (n - 1) / n x B per chip at the chip's link bandwidth, 2 (n - 1) latencies."""
    links = system(chips).interconnect
    buffer = 8 * 2**20
    cost = collective_cost("all_reduce", buffer, chips, links)
    sent = Fraction(2 * (chips - 1), chips) * buffer
    assert cost.link_bytes == -(-sent.numerator // sent.denominator)
    assert cost.seconds == pytest.approx(float(sent) / 50e9 + 2 * (chips - 1) * 1e-6, rel=1e-12)
    gather = collective_cost("all_gather", buffer, chips, links)
    assert gather.seconds == pytest.approx(float(sent) / 2 / 50e9 + (chips - 1) * 1e-6, rel=1e-12)


def test_torus_all_reduce_runs_along_both_dimensions():
    """A 2 x 4 torus, all 8 chips: reduce-scatter along 4 (3/4 B), all-reduce along 2 of B / 4 (1/4 B),
    all-gather along 4 (3/4 B), both directions of each ring (2 x 50 GB/s); 3 + 2 + 3 steps."""
    links = system(8, "torus_2d", (2, 4)).interconnect
    assert group_rings(links, 8) == (2, 4) and group_rings(links, 4) == (4,) and group_rings(links, 2) == (2,)
    buffer = 4 * 2**20
    cost = collective_cost("all_reduce", buffer, 8, links)
    assert cost.link_bytes == buffer * 7 // 4
    assert cost.steps == 8
    assert cost.seconds == pytest.approx(buffer * 7 / 4 / 100e9 + 8e-6, rel=1e-12)
    with pytest.raises(InputError, match="does not fit a 2 x 4 torus"):
        group_rings(links, 3)


def test_a_collective_costs_its_closed_form_in_the_run():
    """The run's all-reduce row: the closed form's time at the chip clock, its bytes, its link energy."""
    sys = system(4, "ring")
    res = run_on("llama-2-7b", Workload(tokens=64, tp=4), sys)
    row = res[res.name == "layers.0.self_attn.all_reduce"].iloc[0]
    buffer = 64 * 4096 * 2  # bf16 activations
    closed = collective_cost("all_reduce", buffer, 4, sys.interconnect)
    clock_hz = load_target("tpu_v5e_like").hardware.array.clock_mhz * 1e6
    assert row.compute_cycles == math.ceil(closed.seconds * clock_hz)
    assert (row.unit, row.category, row.link_bytes) == ("link", "collective", 3 * buffer // 2)
    assert row.link_pj == pytest.approx(row.link_bytes * 8 * 5.0)
    assert res.totals.link_cycles == res[res.unit == "link"]["total_cycles"].sum()
    assert res.totals.total_cycles >= res.totals.link_cycles + res.totals.array_cycles


def test_a_faster_link_never_slows_a_run_and_more_chips_never_add_weight_bytes():
    spec = load_model("llama-2-7b")
    previous = None
    for gb in (10.0, 50.0, 200.0):
        summary = generation_summary(generate(spec, Workload(tokens=32, tp=4), 4, Simulator(
            load_target("tpu_v5e_like").hardware, INT8, system=system(4, gb=gb))), load_target("tpu_v5e_like").hardware)
        if previous is not None:
            assert summary["ttft_ms"] <= previous["ttft_ms"] and summary["tpot_ms"] <= previous["tpot_ms"]
            assert summary["collective_ms"] < previous["collective_ms"]
        previous = summary
    weights = [generate(spec, Workload(tokens=32, tp=tp), 2, Simulator(
        load_target("tpu_v5e_like").hardware, INT8, system=system(tp) if tp > 1 else None)).weight_bytes
        for tp in (1, 2, 4, 8)]
    assert weights == sorted(weights, reverse=True)


def test_a_systems_energy_is_its_chips_energy():
    """Every chip runs the same steps: the system's energy is the chips' (links included), and its per-chip
    figures split the system's."""
    hardware = load_target("tpu_v5e_like").hardware
    sys = system(4, "torus_2d", (2, 2))
    generation = generate(load_model("llama-2-7b"), Workload(tokens=32, tp=4), 3, Simulator(hardware, INT8, system=sys))
    summary = generation_summary(generation, hardware)
    chip = (generation.prefill["energy_pj"].sum() + generation.decode["energy_pj"].sum()
            + generation.prefill.totals.energy["static_mw"] * summary["e2e_ms"] * 1e6)
    assert summary["energy"]["total_pj"] == pytest.approx(4 * chip, rel=1e-9)
    links = generation.prefill["link_pj"].sum() + generation.decode["link_pj"].sum()
    assert summary["energy"]["by_component"]["links"] == pytest.approx(4 * links, rel=1e-12) and links > 0
    assert summary["tokens_per_s_per_chip"] == pytest.approx(summary["tokens_per_s"] / 4)
    assert 0 < summary["collective_share"] < 1


@pytest.mark.parametrize(("workload", "message"), [
    (Workload(tp=3), "--tp 3 does not divide num_attention_heads = 32"),
    (Workload(tp=0), "--tp must be a positive integer"),
])
def test_plans_the_model_cannot_split_are_refused(workload, message):
    with pytest.raises(InputError, match=message):
        load_model("llama-2-7b").trace(workload)
    with pytest.raises(InputError, match="--tp does not apply to bert"):
        load_model("bert-base").trace(Workload(tp=2))
    with pytest.raises(InputError, match="--tp 16 neither divides nor is a multiple of num_key_value_heads = 12"):
        TensorParallel(16).kv_heads(12)


def test_a_collective_on_one_chip_is_refused():
    trace = load_model("llama-2-7b").trace(Workload(tokens=8, tp=2))
    with pytest.raises(InputError, match="a collective runs between chips"):
        Simulator(load_target("tpu_v5e_like").hardware, INT8).run(trace)


@pytest.mark.parametrize(("changes", "message"), [
    ({"interconnect": {"topology": "torus_2d", "shape": [2, 3], "links_per_chip": 4, "link_gb_per_s": 50,
                       "link_latency_us": 1, "link_pj_per_bit": 5}}, "does not make 8 chips"),
    ({"interconnect": {"topology": "switch", "links_per_chip": 1, "link_gb_per_s": 0, "link_latency_us": 1,
                       "link_pj_per_bit": 5}}, "link_gb_per_s"),
    ({"interconnect": {"topology": "ring", "links_per_chip": 4, "link_gb_per_s": 50, "link_latency_us": 1,
                       "link_pj_per_bit": 5}}, "a ring gives each chip 2 links"),
])
def test_bad_systems_are_refused_in_one_line(tmp_path, changes, message):
    from cli_helpers import accelsim

    data = {"name": "bad", "chip": "tpu_v5e_like", "chips": 8, **changes}
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(data))
    result = accelsim("generate", "configs/int8.yaml", "--model", "llama-2-7b", "--prompt", "8", "--new-tokens", "2",
                      "--hardware", str(path), "--tp", "8")
    assert_one_line_error(result, message)


@pytest.mark.parametrize(("args", "message"), [
    (["--hardware", "tpu_v5e_like", "--tp", "2"], "hardware tpu_v5e_like is one chip"),
    (["--hardware", "tpu_v5e_x8", "--tp", "4"], "the parallel plan must use every chip (tp x ep x pp = 8)"),
    (["--hardware", "tpu_v5e_x8"], "--tp 1 uses 1 of tpu_v5e_x8's 8 chips"),
    (["--hardware", "tpu_v5e_x4", "--tp", "3"], "--tp 3 does not divide num_attention_heads = 32"),
    (["--hardware", "tpu_v5e_x4", "--tp", "0"], "--tp"),
])
def test_bad_plans_on_the_command_line(accelsim_here, args, message):
    result = accelsim_here("generate", "configs/int8.yaml", "--model", "llama-2-7b", "--prompt", "8",
                           "--new-tokens", "2", *args)
    assert_one_line_error(result, message)


def test_a_chip_command_names_a_system_for_what_it_is(accelsim_here):
    assert_one_line_error(accelsim_here("area", "tpu_v5e_x8"), "tpu_v5e_x8 is a system of several chips")


def test_70b_on_eight_chips(run_cli):
    """The issue's target: Llama-2-70B int8 split 8 ways on a v5e-8 slice; bf16 needs 16 chips."""
    summary = json.loads(run_cli("generate", "configs/int8.yaml", "--model", "llama-2-70b", "--prompt", "512",
                                 "--new-tokens", "16", "--hardware", "tpu_v5e_x8", "--tp", "8", "--format", "json"))
    assert (summary["hardware"], summary["chip"], summary["chips"], summary["parallel"]) == (
        "tpu_v5e_x8", "tpu_v5e_like", 8, {"tp": 8, "ep": 1, "pp": 1, "microbatches": 1})
    assert summary["dram_footprint_bytes"] < summary["dram_capacity_bytes"] < 2 * summary["weight_bytes"]
    assert 0 < summary["collective_share"] < 0.5


def test_overlapped_collectives_take_the_longer_of_the_two():
    """overlap_collectives: a pass takes max(its work, its collectives), never longer than serial."""
    serial_sys = system(4, "ring")
    overlapped = serial_sys.model_copy(update={"overlap_collectives": True})
    workload = Workload(tokens=64, tp=4)
    serial, both = run_on("llama-2-7b", workload, serial_sys), run_on("llama-2-7b", workload, overlapped)
    totals = both.totals
    work = serial.totals.total_cycles - serial.totals.link_cycles - serial.totals.launch_cycles
    assert totals.total_cycles == max(work, totals.link_cycles) + totals.launch_cycles
    assert totals.total_cycles < serial.totals.total_cycles
    hardware = load_target("tpu_v5e_like").hardware
    tpots = [generation_summary(generate(load_model("llama-2-7b"), Workload(tokens=32, tp=4), 4,
                                         Simulator(hardware, INT8, system=s)), hardware)["tpot_ms"]
             for s in (serial_sys, overlapped)]
    assert tpots[1] < tpots[0]


def test_torus_all_gather_send_and_rounding():
    """A 2 x 4 group's all-gather: along 2 of B / 4, then along 4 (1/8 + 3/4 of B, 1 + 3 steps); a send crosses
    one link one way; bytes sent round up to whole bytes."""
    torus = system(8, "torus_2d", (2, 4)).interconnect
    gather = collective_cost("all_gather", 2**20, 8, torus)
    assert (gather.link_bytes, gather.steps) == (2**20 // 8 + 3 * 2**20 // 4, 4)
    assert gather.seconds == pytest.approx((2**20 // 8 + 3 * 2**20 // 4) / 100e9 + 4e-6, rel=1e-12)
    send = collective_cost("send", 2**20, 2, torus)
    assert send.seconds == pytest.approx(2**20 / 50e9 + 1e-6, rel=1e-12) and send.link_bytes == 2**20
    odd = collective_cost("all_reduce", 1001, 3, system(3).interconnect)
    assert odd.link_bytes == 1335 and type(odd.link_bytes) is int  # 2 x 2/3 x 1001 = 1334.7
    with pytest.raises(ValueError, match="unknown collective 'broadcast'"):
        collective_cost("broadcast", 8, 2, torus)


def test_pipeline_stages_are_checked():
    from workloads.parallel import PipelineStage

    with pytest.raises(InputError, match="--pp must be a positive integer, got 0"):
        PipelineStage(0)
    with pytest.raises(InputError, match="stage must be a positive integer"):
        PipelineStage(2, -1)
    assert PipelineStage(2**31 - 1, 0).first and PipelineStage(3, 2).last


def test_a_decode_steps_collectives_move_one_token_per_sequence():
    """Per decode step: two all-reduces per block of batch x hidden, the embedding's, and the gathered logits."""
    trace = load_model("llama-2-7b").trace(Workload(tokens=100, batch=3, phase="decode", tp=4))
    reduces = [op for op in trace if op.role == "all_reduce"]
    assert len(reduces) == 2 * 32 + 1 and {op.elements for op in reduces} == {3 * 4096}
    (gather,) = [op for op in trace if op.role == "all_gather"]
    assert gather.elements == 3 * 32000


def test_degrees_are_whole_numbers_up_to_the_largest_size():
    from workloads.parallel import ExpertParallel, PipelineStage

    for bad in (True, 0, 2.0):
        with pytest.raises(InputError, match="must be a positive integer"):
            TensorParallel(bad)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="must be a positive integer"):
            PipelineStage(bad)  # type: ignore[arg-type]
    assert TensorParallel(2**31 - 1).split and ExpertParallel(2**31 - 1).degree == 2**31 - 1


def test_simulate_takes_the_system():
    from simulator.engine import simulate

    trace = load_model("llama-2-7b").trace(Workload(tokens=16, tp=2))
    sys = system(2)
    assert simulate(trace, load_target("tpu_v5e_like").hardware, INT8, system=sys).totals.total_cycles == (
        run_on("llama-2-7b", Workload(tokens=16, tp=2), sys).totals.total_cycles)
