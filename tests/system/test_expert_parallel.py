"""Expert parallelism: Mixtral's experts split over chips, attention data-parallel, all-to-all dispatch and
combine (workloads/parallel.py, families/mixtral.py, engine/collectives.py)."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from cli_helpers import assert_one_line_error

from simulator.engine.collectives import collective_cost
from simulator.spec.system import Interconnect
from workloads.errors import InputError
from workloads.families.mixtral import expected_experts
from workloads.models import Workload, load_model

SPEC = load_model("mixtral-8x7b")


def links(topology: str, shape: tuple[int, int] | None = None) -> Interconnect:
    return Interconnect(topology=topology, shape=shape, links_per_chip={"ring": 2, "torus_2d": 4}.get(topology, 1),
                        link_gb_per_s=50, link_latency_us=1, link_pj_per_bit=5)


def test_each_chip_holds_its_experts_and_a_copy_of_the_rest():
    """46.7 B parameters over 4 chips: 2 of 8 experts each, attention, router, embedding and head replicated."""
    whole = SPEC.trace(Workload(tokens=64, batch=4))
    chip = SPEC.trace(Workload(tokens=64, batch=4, ep=4))
    expert = sum(op.params for op in whole if ".experts." in op.name)
    assert chip.params == whole.params - expert + expert // 4
    assert sum(op.params for op in chip if ".experts." in op.name) == expert // 4
    assert chip.workload["batch"] == 1  # each chip's sequences
    held = [op for op in SPEC.trace(Workload(tokens=1, batch=4, ep=4, phase="decode")) if op.held]
    assert held and all(type(op.batch) is int for op in held)


def test_dispatch_and_combine_move_the_routed_copies():
    """Each chip sends its tokens' k routed copies out and takes the results back: rows x k x hidden each way."""
    chip = SPEC.trace(Workload(tokens=64, batch=8, ep=4))
    exchanges = [op for op in chip if op.role == "all_to_all"]
    assert len(exchanges) == 2 * 32
    assert {op.elements for op in exchanges} == {2 * 64 * 2 * 4096} and {op.ranks for op in exchanges} == {4}
    assert [op.name.rsplit(".", 1)[1] for op in exchanges[:2]] == ["dispatch", "combine"]


def test_the_experts_share_the_expected_routing_of_all_chips_tokens():
    """A decode step of 8 sequences on 4 chips: all 8 tokens' expected experts touched, a quarter per chip,
    and a quarter of the 16 token-expert pairs: the layers together run L x E(1 - (1 - k/E)^8) / 4 experts."""
    chip = SPEC.trace(Workload(tokens=64, batch=8, ep=4, phase="decode"))
    runs = [op for op in chip if op.name.endswith("gate_up_proj") and not op.held]
    expected = 32 * expected_experts(8, 8, 2) / 4
    assert abs(len(runs) - expected) <= 1
    per_layer: dict[int, int] = {}
    for op in runs:
        per_layer[op.layer] = per_layer.get(op.layer, 0) + op.m
    assert set(per_layer.values()) == {8 * 2 // 4}
    whole = SPEC.trace(Workload(tokens=64, batch=8, phase="decode"))
    expert_macs = sum(op.macs for op in whole if ".experts." in op.name)
    assert 4 * sum(op.macs for op in chip if ".experts." in op.name) == expert_macs


@pytest.mark.parametrize("chips", [2, 4, 8])
def test_all_to_all_closed_forms(chips):
    """Behind a switch (n - 1) / n x B; on a bidirectional ring B / n x sum of min(d, n - d) hops, both ways."""
    buffer = 3 * 2**20
    switch = collective_cost("all_to_all", buffer, chips, links("switch"))
    assert switch.link_bytes == buffer * (chips - 1) // chips
    assert switch.seconds == pytest.approx(buffer * (chips - 1) / chips / 50e9 + (chips - 1) * 1e-6, rel=1e-12)
    ring = collective_cost("all_to_all", buffer, chips, links("ring"))
    hops = Fraction(buffer, chips) * sum(min(d, chips - d) for d in range(1, chips))
    assert ring.link_bytes == -(-hops.numerator // hops.denominator)
    assert ring.seconds == pytest.approx(float(hops) / 100e9 + (chips - 1) * 1e-6, rel=1e-12)


def test_a_torus_all_to_all_runs_each_dimension():
    cost = collective_cost("all_to_all", 2**20, 8, links("torus_2d", (2, 4)))
    # along 4: (1 + 2 + 1) / 4 of B; along 2: 1 / 2 of B
    assert cost.link_bytes == 2**20 + 2**19 and cost.steps == 3 + 1


@pytest.mark.parametrize(("workload", "message"), [
    (Workload(batch=2, ep=4), "--ep 4 gives each chip batch / 4 of the sequences; batch 2"),
    (Workload(batch=3, ep=3), "--ep 3 does not divide num_local_experts = 8"),
    (Workload(batch=4, ep=4, tp=2), "--tp with --ep is not modelled"),
])
def test_bad_expert_plans(workload, message):
    with pytest.raises(InputError, match=message):
        SPEC.trace(workload)
    with pytest.raises(InputError, match="--ep does not apply to llama models"):
        load_model("llama-2-7b").trace(Workload(batch=2, ep=2))


def test_mixtral_int8_on_four_v5e_chips(run_cli):
    """Refused on one v5e (46.7 B parameters in 16 GB); 4 chips with 2 experts each hold it."""
    summary = json.loads(run_cli("generate", "configs/int8.yaml", "--model", "mixtral-8x7b", "--prompt", "128",
                                 "--new-tokens", "8", "--batch", "4", "--hardware", "tpu_v5e_x4", "--ep", "4",
                                 "--format", "json"))
    assert (summary["chips"], summary["parallel"]) == (4, {"tp": 1, "ep": 4, "pp": 1, "microbatches": 1})
    assert summary["dram_footprint_bytes"] < summary["dram_capacity_bytes"]
    assert summary["collective_share"] > 0


def test_mixtral_on_one_chip_is_refused(accelsim_here):
    result = accelsim_here("generate", "configs/int8.yaml", "--model", "mixtral-8x7b", "--prompt", "128",
                           "--new-tokens", "8", "--hardware", "tpu_v5e_like")
    assert_one_line_error(result, "more than hardware tpu_v5e_like's DRAM")
