"""Each capability a preset lists carries its area and energy (issue 30.8): N:M and unstructured
zero-skipping, in-PE dequantization and the decompressor, priced from the table's entries."""

import math

import pytest
from conftest import preset_with

from simulator.energy.action_costs import action_costs
from simulator.energy.capabilities import UNSTRUCTURED_WINDOW
from simulator.engine import simulate
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_run_config
from workloads.models import Workload, load_model

MUX, MUX_AREA, REGISTER_AREA = 0.02947 / 32, 71 / 32, 5.98  # the table's (derived) 45 nm entries


@pytest.fixture(autouse=True)
def fresh_costs():
    from simulator.energy.action_costs import _cached

    _cached.cache_clear()


def bare(**sections):
    """tpu_v5e_like at the tables' node (bf16: 1 lane, int8: 2 lanes), with no optional capability."""
    return preset_with(preset_with("tpu_v5e_like", energy={"node_nm": 45, "vdd_v": 0.9}), **sections)


def test_nm_skipping_adds_a_multiplexer_and_an_index_per_lane():
    plain, skipping = action_costs(bare()), action_costs(bare(sparse={"patterns": ["2:4"]}))
    # the most demanding format: int8, 2 lanes x (3 multiplexer bits per bit x 8 bits + 2 index bits)
    extra = max(2 * (3 * 8 * MUX_AREA + 2 * REGISTER_AREA), 1 * (3 * 16 * MUX_AREA + 2 * REGISTER_AREA))
    assert skipping.pe_area_um2 - plain.pe_area_um2 == pytest.approx(extra)
    assert skipping.area_mm2["pes"] > plain.area_mm2["pes"] and skipping.static_mw["pes"] > plain.static_mw["pes"]
    assert skipping.capabilities.skip_select_pj == pytest.approx({"bf16": 3 * 16 * MUX, "int8": 3 * 8 * MUX})


def test_unstructured_skipping_adds_a_wider_selector_and_a_zero_detector():
    nm = action_costs(bare(sparse={"patterns": ["2:4"]}))
    both = action_costs(bare(sparse={"patterns": ["2:4"], "unstructured": True}))
    w = UNSTRUCTURED_WINDOW
    per_lane = {bits: (w - 1) * bits * MUX_AREA + math.ceil(math.log2(w)) * REGISTER_AREA + bits * MUX_AREA
                for bits in (8, 16)}
    base = action_costs(bare())
    assert both.pe_area_um2 - base.pe_area_um2 == pytest.approx(max(2 * per_lane[8], per_lane[16]))
    assert both.pe_area_um2 > nm.pe_area_um2


def test_in_pe_dequantization_costs_a_multiplier_and_adder_per_lane_and_per_load():
    plain, dequant = action_costs(bare()), action_costs(bare(dequantize_in_pe=["int4"]))
    assert dequant.pe_area_um2 > plain.pe_area_um2
    bf16_mult, int4_add = 0.581818, 0.03 * 4 / 8  # the table's bf16 multiply; an 8-bit add scaled to 4 bits
    assert dequant.capabilities.dequantize_pj == pytest.approx(bf16_mult + int4_add)
    assert plain.capabilities.dequantize_pj == 0


def test_the_decompressor_is_a_component_of_its_own():
    plain, with_one = action_costs(bare()), action_costs(bare(sparse={"decompressor": True}))
    assert "decompressor" not in plain.area_mm2
    columns, word = 4 * 128, max(16 * 1, 8 * 2)
    assert with_one.area_mm2["decompressor"] == pytest.approx(columns * word * 3 * MUX_AREA / 1e6)
    assert with_one.static_mw["decompressor"] > 0


def test_a_w4a16_decode_step_pays_for_the_dequantization_its_pes_do():
    """The issue's case: dequantize_in_pe removes the vector unit's pass; its PEs now pay for it."""
    step = load_model("llama-2-7b").trace(Workload(tokens=256, phase="decode", head="none"))
    policy = load_run_config("w4a16_g128")
    hardware = preset_with("rapid_like", dequantize_in_pe=["int4"])
    res = simulate(step, hardware, policy)
    arrays = res[res.unit == "array"]
    dequantized = arrays[arrays.pe_dequantized_loads > 0]
    assert len(dequantized) == 7 * 32  # q, k, v, o, gate, up, down of every block
    assert (dequantized.pe_dequantized_loads == dequantized.array_weight_loads).all()
    costs = action_costs(hardware)
    assert costs.capabilities.dequantize_pj > 0
    assert costs.area_mm2["pes"] > action_costs(load_hardware("rapid_like")).area_mm2["pes"]


def test_skipped_products_count_a_selection_per_issued_mac():
    trace = load_model("bert-base").trace(Workload(tokens=128))
    res = simulate(trace, load_hardware("rapid_like"), load_run_config("int8_sp"))
    arrays = res[res.unit == "array"]
    pruned = arrays[arrays.sparsity == "2:4"]
    assert len(pruned) == 6 * 12 and (pruned.skip_selects == pruned.macs).all()
    assert (arrays[arrays.sparsity != "2:4"].skip_selects == 0).all()


def test_gating_pes_have_a_zero_detector_per_lane_and_select_nothing():
    plain = action_costs(bare())
    gate = action_costs(bare(sparse={"patterns": ["2:4"], "unstructured": True, "mode": "gate"}))
    assert gate.pe_area_um2 - plain.pe_area_um2 == pytest.approx(max(2 * 8, 16) * MUX_AREA)
    assert gate.capabilities.skip_select_pj == {"bf16": 0.0, "int8": 0.0}


def test_unstructured_selection_energy_is_its_window():
    both = action_costs(bare(sparse={"unstructured": True}))
    w = UNSTRUCTURED_WINDOW
    assert both.capabilities.skip_select_pj == pytest.approx({"bf16": (w - 1) * 16 * MUX, "int8": (w - 1) * 8 * MUX})


def test_in_pe_dequantization_area_in_closed_form():
    """tpu_v5e_like computes dequantized weights in bf16 (1 lane): a bf16 multiplier (8-bit significand
    product, 8-bit exponent adder), an adder as wide as the widest listed format, a 16-bit scale register."""
    from simulator.energy.tables import load_scaling_rule

    to_45 = load_scaling_rule("stillmaker_baas").area_scale(40, 45)  # the adder entry is a 40 nm one
    adder_bit = 278 * to_45 / 32
    plain = action_costs(bare())
    for listed, widest in ((["int4"], 4), (["int4", "int8"], 8)):
        dequant = action_costs(bare(dequantize_in_pe=listed))
        multiplier = 8 * 8 * 6350 / 1024 + 8 * adder_bit
        assert dequant.pe_area_um2 - plain.pe_area_um2 == pytest.approx(
            multiplier + widest * adder_bit + 16 * REGISTER_AREA)
        assert dequant.capabilities.dequantize_pj == pytest.approx(0.581818 + 0.03 * widest / 8)


def test_the_decompressor_expands_each_weight_at_its_patterns_width():
    with_one = action_costs(bare(sparse={"decompressor": True, "patterns": ["2:8"]}))
    assert with_one.capabilities.decompress_pj == pytest.approx({"bf16": 7 * 16 * MUX, "int8": 7 * 8 * MUX})
    assert with_one.area_mm2["decompressor"] == pytest.approx(4 * 128 * 16 * 7 * MUX_AREA / 1e6)
    assert action_costs(bare()).capabilities.decompress_pj == {"bf16": 0.0, "int8": 0.0}


def test_a_chip_with_wider_pes_pays_per_lane():
    """rapid_like dequantizes into fp16 on 2 lanes; its widest weight word is 64 bits (int8 x 8 lanes)."""
    from simulator.energy.tables import load_scaling_rule

    to_45 = load_scaling_rule("stillmaker_baas").area_scale(40, 45)
    adder_bit = 278 * to_45 / 32

    def rapid(**sections):
        return preset_with(preset_with("rapid_like", energy={"node_nm": 45, "vdd_v": 0.9}), **sections)

    plain, dequant = action_costs(rapid()), action_costs(rapid(dequantize_in_pe=["int4"]))
    fp16_multiplier = 11 * 11 * 6350 / 1024 + 5 * adder_bit
    assert dequant.pe_area_um2 - plain.pe_area_um2 == pytest.approx(
        2 * (fp16_multiplier + 4 * adder_bit) + 16 * REGISTER_AREA)
    decompressing = action_costs(rapid(sparse={"patterns": ["2:4"], "decompressor": True}))
    assert decompressing.area_mm2["decompressor"] == pytest.approx(64 * 64 * 3 * MUX_AREA / 1e6)  # 64 columns
