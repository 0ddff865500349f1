"""Energy and area: the cited tables, node scaling, per-action costs, closed forms for one GEMM, and the
model's invariants (conservation, skip <= gate <= dense, narrower formats cost less, leakage x time).
The cross-check against ZigZag itself is in test_zigzag_peer.py."""

import math

import pytest
from cli_helpers import ROOT
from conftest import preset_with
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.energy.accounting import leakage_pj, static_mw
from simulator.energy.action_costs import action_costs
from simulator.energy.primitives import Scaled, int_mult_pj
from simulator.energy.tables import load_action_table, load_scaling_rule, load_sram_table
from simulator.engine import simulate
from simulator.engine.records import ENERGY_COLUMNS
from simulator.spec.hardware import Hardware, load_hardware, preset_names
from simulator.spec.run_config import load_run_config
from workloads.builder import OpBuilder

INT8 = load_run_config("configs/int8.yaml")
INT8_SP = load_run_config("configs/int8_sp.yaml")
INT4 = load_run_config("configs/int4.yaml")
FP16 = load_run_config("configs/fp16.yaml")
RULE = load_scaling_rule("stillmaker_baas")
MUX_AREA = 71 / 32  # um2 of a 2:1 multiplexer bit at 45 nm (the table's assumed entry)
TABLE = load_action_table("horowitz_45nm")
SRAM = load_sram_table("sram_cacti7_45nm")


@pytest.fixture(autouse=True)
def fresh_costs():
    """Per-action costs are memoised per hardware; each test computes its own, so that mutation testing
    (which runs only the tests that reach a function) sees every test that depends on a formula."""
    from simulator.energy.action_costs import _cached

    _cached.cache_clear()


def at_45nm(name: str = "rapid_like", **sections) -> Hardware:
    """A preset moved to the tables' own node and voltage (no scaling), with sections updated."""
    return preset_with(preset_with(name, energy={"node_nm": 45, "vdd_v": 0.9}), **sections)


def one_gemm(m: int, k: int, n: int):
    b = OpBuilder()
    b.input("x", m * k)
    b.gemm("proj", 0, "ffn1", "ffn", m, k, n, bias=False)
    return b.build_trace("gemm", {"batch": 1})


def row(results, name: str = "proj"):
    return results.set_index("name").loc[name]


# --- tables and scaling ----------------------------------------------------------------------------

def test_every_entry_cites_a_source_and_every_preset_is_priced():
    assert all(entry.source.strip() for entry in TABLE.entries.values())
    for name in preset_names():
        costs = action_costs(load_hardware(name))
        assert all(value > 0 for value in costs.mac_pj.values())
        assert sum(costs.area_mm2.values()) > 0


def test_at_the_tables_node_the_published_numbers_come_back():
    costs = action_costs(at_45nm())  # rapid_like: fp32/fp16/int8/int4/int2 MACs, 32-bit accumulator, LPDDR4
    assert costs.mac_pj["int8"] == pytest.approx(0.2 + 0.1)  # Horowitz: int8 multiply + int32 add
    assert costs.mac_pj["fp16"] == pytest.approx(1.1 + 0.9)  # fp16 multiply + fp32 accumulate
    assert costs.mac_pj["fp32"] == pytest.approx(3.7 + 0.9)
    assert costs.register_bit_pj == pytest.approx(0.009)
    assert costs.dram_pj_per_byte == pytest.approx(8 * 8)  # LPDDR4: 8 pJ per bit
    assert costs.gated_fraction == pytest.approx(0.018 / 0.561)
    scaled = Scaled(at_45nm(), TABLE, RULE)
    assert int_mult_pj(scaled, 32, 32) == pytest.approx(3.1)  # the width fit passes through both points
    assert int_mult_pj(scaled, 8, 8) == pytest.approx(0.2)


def test_narrower_formats_cost_less_per_mac_on_every_preset():
    order = ("int2", "int4", "int8", "bf16", "fp16", "fp32")
    for name in preset_names():
        macs = action_costs(load_hardware(name)).mac_pj
        present = [macs[fmt] for fmt in order if fmt in macs]
        assert present == sorted(present) and len(set(present)) == len(present), name


def test_stillmaker_baas_scaling_in_closed_form():
    def factor(a: float, b: float, c: float, vdd: float) -> float:
        return a * vdd**2 + b * vdd + c

    expected = factor(0.1776, -0.09097, 0.02447, 0.75) / factor(1.103, -0.362, 0.2767, 0.9)
    assert RULE.energy_scale(45, 0.9, 7, 0.75) == pytest.approx(expected)
    assert RULE.area_scale(45, 7) == pytest.approx(0.059)
    assert RULE.area_scale(40, 45) == pytest.approx(1 / (0.46 + (40 - 32) / (45 - 32) * (1 - 0.46)))
    costs = action_costs(load_hardware("rapid_like"))  # 7 nm, 0.75 V
    assert costs.mac_pj["int8"] == pytest.approx(0.3 * expected)


def test_sram_lookup_is_the_row_at_a_row_and_log_log_between():
    rows = sorted((r for r in SRAM.rows if r.cell == "itrs-hp" and r.port_bits == 64), key=lambda r: r.capacity_bytes)
    low, high = rows[2], rows[3]
    assert SRAM.lookup(low.capacity_bytes, 64, "itrs-hp").read_pj == low.read_pj
    middle = SRAM.lookup(int(math.sqrt(low.capacity_bytes * high.capacity_bytes)), 64, "itrs-hp")
    assert middle.read_pj == pytest.approx(math.sqrt(low.read_pj * high.read_pj), rel=1e-9)
    assert middle.area_mm2 == pytest.approx(math.sqrt(low.area_mm2 * high.area_mm2), rel=1e-9)


@pytest.mark.slow
def test_sram_table_is_what_cacti_says():
    """Two rows regenerated by the script that wrote the table, with ZigZag's CACTI 7 binary."""
    import sys

    sys.path.insert(0, str(ROOT / "calibration"))
    import cacti_sram_table

    cacti = cacti_sram_table.default_cacti()
    for capacity, width, cell in ((8192, 64, "itrs-hp"), (524288, 512, "itrs-lstp")):
        fresh = cacti_sram_table.run_one(cacti, capacity, width, cell)
        stored = next(r for r in SRAM.rows if (r.capacity_bytes, r.port_bits, r.cell) == (capacity, width, cell))
        assert {key: fresh[key] for key in ("read_pj", "write_pj", "leakage_mw", "area_mm2")} == {
            "read_pj": stored.read_pj, "write_pj": stored.write_pj, "leakage_mw": stored.leakage_mw,
            "area_mm2": stored.area_mm2}


# --- one GEMM in closed form ----------------------------------------------------------------------

def test_one_int8_gemm_in_closed_form():
    m, k, n = 100, 300, 200
    hw = at_45nm()
    res = simulate(one_gemm(m, k, n), hw, INT8)
    r = row(res)
    costs = action_costs(hw)
    mac = 0.2 + 0.1
    gated = 0.018 / 0.561
    slots = r["compute_cycles"] * hw.pes * 8  # int8: 8 MACs per PE per cycle
    assert r["macs"] == m * k * n
    assert r["mac_pj"] == pytest.approx(m * k * n * mac)
    assert r["idle_pj"] == pytest.approx((slots - m * k * n) * gated * mac)
    loads, updates = k * n, math.ceil(m * k * n / 8)  # ws: each weight enters once; 8 products per psum update
    assert (r["array_weight_loads"], r["array_psum_updates"]) == (loads, updates)
    assert r["register_pj"] == pytest.approx((loads * 8 + m * k * n * 8 + updates * 32) * 0.009)
    for buffer in ("ifmap", "filter", "ofmap"):
        point = SRAM.lookup(min(getattr(hw.memory, f"{buffer}_buffer_bytes"), hw.energy.sram_bank_bytes),
                            hw.energy.sram_port_bits, hw.energy.sram_cell)
        per_byte = hw.energy.sram_port_bits / 8
        scale = RULE.energy_scale(45, SRAM.vdd_v[hw.energy.sram_cell], 45, 0.9)
        expected = (r[f"{buffer}_read_bytes"] * point.read_pj + r[f"{buffer}_write_bytes"] * point.write_pj) * scale
        assert r[f"{buffer}_pj"] == pytest.approx(expected / per_byte)
    assert r["dram_pj"] == pytest.approx(r["dram_bytes"] * 64)
    assert costs.mac_pj["int8"] == pytest.approx(mac)


def test_partial_sums_do_not_shrink_with_weight_precision():
    """A BERT FFN layer on the TPU v1-like ws array: INT4 weights run on its INT8 MACs, so MACs and
    partial sums (PE registers at 32 bits, accumulator buffer read-modify-writes per K fold) cost the
    same; the partial-sum path is the largest on-chip part, above the MACs."""
    hw = load_hardware("tpu_v1_like")
    costs = action_costs(hw)
    paths = {}
    for policy in (INT8, INT4):
        r = row(simulate(one_gemm(384, 768, 3072), hw, policy))
        psum = r["array_psum_updates"] * 32 * costs.register_bit_pj + r["ofmap_pj"]
        on_chip = r["mac_pj"] + r["register_pj"] + r["ifmap_pj"] + r["filter_pj"] + r["ofmap_pj"]
        paths[policy.name] = psum
        assert psum > r["mac_pj"] and psum > 0.45 * on_chip
    assert paths["int4"] == pytest.approx(paths["int8"])


# --- invariants -----------------------------------------------------------------------------------

SHAPES = st.tuples(st.integers(1, 200), st.integers(4, 600), st.integers(1, 400))  # K holds one 2:4 group


@settings(max_examples=25, deadline=None)
@given(shape=SHAPES, bandwidth=st.sampled_from([4.0, 64.0, 1024.0]), rows=st.sampled_from([4, 8, 32]))
def test_energy_is_the_sum_of_its_parts(shape, bandwidth, rows):
    hw = at_45nm(array={"rows": rows}, memory={"dram_bytes_per_cycle": bandwidth})
    b = OpBuilder()
    m, k, n = shape
    b.input("x", m * k)
    b.layernorm("norm", 0, "norm", m, k)
    b.gemm("proj", 0, "ffn1", "ffn", m, k, n)
    b.vector("act", 0, "gelu", "ffn", m * n)
    res = simulate(b.build_trace("chain", {"batch": 1}), hw, INT8)
    parts = [column for column in ENERGY_COLUMNS if column != "energy_pj"]
    assert (res[parts].sum(axis=1) - res["energy_pj"]).abs().max() <= 1e-9 * res["energy_pj"].max()
    energy = res.totals["energy"]
    assert sum(energy["by_component"].values()) == pytest.approx(energy["total_pj"])
    assert energy["total_pj"] == pytest.approx(res["energy_pj"].sum() + energy["by_component"]["leakage"])
    costs = action_costs(hw)
    assert energy["by_component"]["leakage"] == pytest.approx(static_mw(costs) * res.totals["latency_ms"] * 1e6)
    assert energy["tops_per_w"] == pytest.approx(2 * res.totals["macs"] / energy["total_pj"])


@settings(max_examples=20, deadline=None)
@given(shape=SHAPES)
def test_skipping_never_costs_more_than_gating_and_gating_never_more_than_dense(shape):
    skip, gate = at_45nm(), at_45nm(sparse={"mode": "gate"})
    trace = one_gemm(*shape)
    dense = row(simulate(trace, skip, INT8))
    skipped = row(simulate(trace, skip, INT8_SP))
    gated = row(simulate(trace, gate, INT8_SP))
    assert gated["compute_cycles"] == dense["compute_cycles"] >= skipped["compute_cycles"]
    assert gated["macs"] == skipped["macs"] <= dense["macs"]
    # a skipped MAC's selection can cost more than gating its zero (both below dense); the step as a whole,
    # with the activation hops and partial sums skipping saves, does not
    assert max(skipped["mac_pj"], gated["mac_pj"]) <= dense["mac_pj"]
    assert skipped["energy_pj"] <= gated["energy_pj"] <= dense["energy_pj"]


@settings(max_examples=15, deadline=None)
@given(shape=SHAPES)
def test_int4_costs_less_mac_energy_than_int8_than_fp16(shape):
    hw = at_45nm()
    trace = one_gemm(*shape)
    macs = [row(simulate(trace, hw, policy))["mac_pj"] for policy in (INT4, INT8, FP16)]
    assert macs[0] < macs[1] < macs[2]


def test_leakage_is_static_power_times_latency_so_slow_designs_pay():
    trace = one_gemm(256, 768, 768)
    big, small = at_45nm(), at_45nm(array={"rows": 2, "cols": 8})
    leak = {}
    for name, hw in (("big", big), ("small", small)):
        res = simulate(trace, hw, INT8)
        leak[name] = res.totals["energy"]["by_component"]["leakage"]
        assert leak[name] == pytest.approx(leakage_pj(action_costs(hw), res.totals["latency_ms"]))
    assert leak["small"] > leak["big"]  # fewer PEs leak less per ms, but the run takes far longer


# --- reports ------------------------------------------------------------------------------------------

def cli(argv: list[str], capsys) -> str:
    from simulator.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(argv)
    out = capsys.readouterr()
    assert done.value.code == 0, out.err
    return out.out


def test_run_reports_energy_in_json_table_csv_and_a_plot(tmp_path, capsys):
    import json

    import pandas as pd

    summary = json.loads(cli(["run", "configs/int4_sp.yaml", "--model", "bert-base", "--format", "json"], capsys))
    energy = summary["energy"]
    assert energy["total_pj"] == pytest.approx(sum(energy["by_component"].values()))
    assert set(energy["by_component"]) == {"macs", "idle_pe_slots", "registers", "ifmap_buffer", "filter_buffer",
                                           "ofmap_buffer", "dram", "vector_unit", "links", "leakage"}
    assert energy["tops_per_w"] == pytest.approx(2 * summary["macs"] / energy["total_pj"])
    assert summary["area"]["total_mm2"] == pytest.approx(sum(summary["area"]["by_component_mm2"].values()))
    table = cli(["run", "configs/int4_sp.yaml", "--model", "bert-base", "--out", str(tmp_path / "o")], capsys)
    assert "TOPS/W" in table and "leakage (static)" in table and "mm2" in table
    ops = pd.read_csv(tmp_path / "o" / "ops.csv")
    assert ops["energy_pj"].sum() == pytest.approx(energy["dynamic_pj"], rel=1e-9)
    assert (tmp_path / "o" / "energy_breakdown.png").stat().st_size > 0


def test_area_command_sums_its_components(capsys):
    import json

    area = json.loads(cli(["area", "rapid_like", "--json"], capsys))
    assert area["total_mm2"] == pytest.approx(sum(area["by_component_mm2"].values()))
    costs = action_costs(load_hardware("rapid_like"))
    assert area["by_component_mm2"]["pes"] == pytest.approx(512 * costs.pe_area_um2 / 1e6)
    text = cli(["area", "rapid_like"], capsys)
    assert "mm2" in text and "total" in text and "PEs" in text


def test_generate_reports_energy_per_token(capsys):
    import json

    summary = json.loads(cli(["generate", "configs/int8.yaml", "--model", "gpt2", "--prompt", "32", "--new-tokens",
                              "4", "--format", "json"], capsys))
    energy = summary["energy"]
    assert energy["per_token_pj"] == pytest.approx(energy["total_pj"] / 4)
    leak = static_mw(action_costs(load_hardware("rapid_like"))) * summary["e2e_ms"] * 1e6
    assert energy["total_pj"] == pytest.approx(energy["prefill_dynamic_pj"] + energy["decode_dynamic_pj"] + leak)


def test_a_buffer_too_small_for_an_sram_array_is_a_register_file():
    hw = at_45nm(memory={"ifmap_buffer_bytes": 1024})  # below CACTI's smallest 512-bit-port array (8 KiB)
    costs = action_costs(hw)
    assert costs.buffer_read_pj_per_byte["ifmap"] == costs.buffer_write_pj_per_byte["ifmap"] == pytest.approx(8 * 0.009)
    assert costs.area_mm2["ifmap_buffer"] == pytest.approx(1024 * 8 * 5.98 / 1e6)


@pytest.mark.parametrize(("change", "needle"), [
    ((r"table: horowitz_45nm", "table: horowitz_7nm"), "unknown energy table 'horowitz_7nm'"),
    ((r"dram: lpddr4", "dram: hbm3"), "unknown DRAM technology 'hbm3'"),
    ((r"sram_port_bits: 512", "sram_port_bits: 100"), "100-bit ports"),
    ((r"vdd_v: 0.75", "vdd_v: -1"), "vdd_v"),
    ((r"node_nm: 7 ", "node_nm: 5 "), "covers 7 to 130 nm, not 5 nm"),
])
def test_energy_sections_that_cannot_be_priced_are_refused_in_one_line(tmp_path, capsys, change, needle):
    """More bad input (test_bad_input.py runs four of these cases as subprocesses)."""
    import re

    from simulator.cli.main import main

    text = (ROOT / "configs" / "hardware" / "rapid_like.yaml").read_text()
    text, count = re.subn(change[0], change[1], text, count=1)
    assert count == 1
    (tmp_path / "hw.yaml").write_text(text)
    with pytest.raises(SystemExit) as done:
        main(["area", str(tmp_path / "hw.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1 and needle in err[0], err


def test_unknown_accounting_is_refused(capsys):
    from simulator.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["run", "int8", "--model", "bert-base", "--accounting", "timeloop"])
    assert done.value.code == 2 and "--accounting" in capsys.readouterr().err


# --- area and static power in closed form ---------------------------------------------------------

def _pe_area_um2(formats: dict[str, int], to_node_45: float, to_node_40: float) -> float:
    """rapid_like's PE from the table's entries by hand: for each format, lanes x (multiplier + 32-bit
    accumulate) plus packed weight and activation registers and one 32-bit partial sum; the largest.
    The multiplier and register entries are 45 nm values, the adder a 40 nm one."""
    per_bit_squared = 6350 * to_node_45 / 1024
    adder_per_bit = 278 * to_node_40 / 32
    register_bit = 5.98 * to_node_45
    best = 0.0
    for name, lanes in formats.items():
        if name.startswith("int"):
            bits = int(name[3:])
            lane = bits * bits * per_bit_squared + 32 * adder_per_bit
        else:
            bits, exponent, significand = {"fp16": (16, 5, 11), "fp32": (32, 8, 24)}[name]
            lane = significand**2 * per_bit_squared + exponent * adder_per_bit + (8 + 24) * adder_per_bit  # fp32 acc
        # rapid_like skips 2:4 and unstructured zeros: an 8:1 selector per lane (the wider window), a 3-bit
        # index and a zero detector, in 2:1 multiplexer bits (the table's assumed 71 / 32 um2 at 45 nm)
        skip = lanes * ((8 - 1) * bits * MUX_AREA * to_node_45 + 3 * register_bit + bits * MUX_AREA * to_node_45)
        best = max(best, lanes * lane + (2 * lanes * bits + 32) * register_bit + skip)
    return best


def test_area_and_static_power_in_closed_form():
    hw = at_45nm()
    costs = action_costs(hw)
    to_45 = RULE.area_scale(40, 45)  # the adder's area and leakage are 40 nm entries
    adder_per_bit = 278 * to_45 / 32
    pe = _pe_area_um2(hw.macs_per_pe, 1.0, to_45)
    assert costs.pe_area_um2 == pytest.approx(pe)
    assert costs.area_mm2["pes"] == pytest.approx(512 * pe / 1e6)
    lane = 11 * 11 * 6350 / 1024 + 5 * adder_per_bit + (5 + 11) * adder_per_bit  # an fp16 multiply and add
    assert costs.area_mm2["vector_unit"] == pytest.approx(64 * lane / 1e6)
    leak_per_um2 = 0.0023 * RULE.energy_scale(40, 0.9, 45, 0.9) / (278 * to_45)
    assert costs.static_mw["pes"] == pytest.approx(512 * pe * leak_per_um2)
    bank = SRAM.lookup(524288, 512, "itrs-lstp")  # 8 MiB buffers of 16 banks of 512 KiB
    vdd = RULE.energy_scale(45, 1.1, 45, 0.9)  # CACTI's lstp cells run at 1.1 V
    assert costs.area_mm2["ifmap_buffer"] == pytest.approx(16 * bank.area_mm2)
    assert costs.static_mw["ifmap_buffer"] == pytest.approx(16 * bank.leakage_mw * vdd)
    assert costs.buffer_read_pj_per_byte["ifmap"] == pytest.approx(bank.read_pj * vdd / 64)
    assert costs.buffer_write_pj_per_byte["ifmap"] == pytest.approx(bank.write_pj * vdd / 64)
    at_7 = action_costs(load_hardware("rapid_like"))  # 7 nm: every area by its own node's factor
    to_7 = RULE.area_scale(45, 7)
    assert at_7.pe_area_um2 == pytest.approx(_pe_area_um2(hw.macs_per_pe, to_7, RULE.area_scale(40, 7)))
    assert at_7.area_mm2["ifmap_buffer"] == pytest.approx(16 * bank.area_mm2 * to_7)


def test_every_row_of_a_sparse_chain_in_closed_form():
    """norm -> 2:4 INT8 GEMM -> GELU, then a BMM: buffers of every row, the compressed weights' register
    bits and index reads, gated zeros, the vector unit and the run's summary."""
    m, k, n = 64, 256, 128
    b = OpBuilder()
    b.input("x", m * k)
    b.layernorm("norm", 0, "norm", m, k)
    b.gemm("proj", 0, "ffn1", "ffn", m, k, n, bias=False)
    b.vector("act", 0, "gelu", "ffn", m * n)
    trace = b.build_trace("chain", {"batch": 1})
    for mode in ("skip", "gate"):
        hw = at_45nm(sparse={"mode": mode})
        costs = action_costs(hw)
        res = simulate(trace, hw, INT8_SP)
        for _, r in res.iterrows():
            for buffer in ("ifmap", "filter", "ofmap"):
                assert r[f"{buffer}_pj"] == pytest.approx(
                    r[f"{buffer}_read_bytes"] * costs.buffer_read_pj_per_byte[buffer]
                    + r[f"{buffer}_write_bytes"] * costs.buffer_write_pj_per_byte[buffer])
            if r["unit"] == "sfu":
                per_element = hw.sfu.cycles_per_element[r["role"]]
                assert r["vector_pj"] == pytest.approx(r["elements"] * per_element * (0.4 + 1.1))  # fp16 add + mult
        g = row(res)
        kept, dense = g["macs"], m * k * n
        assert kept == dense // 2 and g["index_bits"] == k * n // 2 * 2  # two 2-bit indices per group of 4
        assert g["weight_bits"] == k * n // 2 * 8 + g["index_bits"]  # stored values plus their indices
        issued = dense if mode == "gate" else kept
        selection = g["index_bits"] * m * 0.009
        if mode == "skip":  # every kept MAC switches its lane's 8:1 selector: 7 x 8 multiplexer bits
            selection += kept * 7 * 8 * 0.02947 / 32
        assert g["mac_pj"] == pytest.approx(kept * 0.3 + (issued - kept) * 0.3 * 0.018 / 0.561 + selection)
        bits_per_load = g["weight_bits"] / (k * n)  # 5 bits: compression reaches the PEs
        assert bits_per_load == 5
        assert g["register_pj"] == pytest.approx(
            (g["array_weight_loads"] * bits_per_load + issued * 8 + math.ceil(issued / 8) * 32) * 0.009)
        energy = res.totals["energy"]
        assert energy["total_uj"] == pytest.approx(energy["total_pj"] / 1e6)
        assert energy["edp_pj_s"] == pytest.approx(energy["total_pj"] * res.totals["latency_ms"] / 1e3)
        assert energy["static_mw"] == pytest.approx(sum(costs.static_mw.values()))


def test_a_bmm_loads_its_second_operand_at_the_compute_width():
    b = OpBuilder()
    b.input("q", 4 * 32 * 16)
    b.input("kt", 4 * 16 * 32)
    b.bmm("scores", 0, "bmm_qk", "attention", 4, 32, 16, 32, reads=("q", "kt"))
    hw = at_45nm()
    r = row(simulate(b.build_trace("bmm", {"batch": 1}), hw, INT8), "scores")
    issued = 4 * 32 * 16 * 32
    assert r["register_pj"] == pytest.approx(
        (r["array_weight_loads"] * 8 + issued * 8 + math.ceil(issued / 8) * 32) * 0.009)


def test_integer_adds_interpolate_between_the_tables_widths_and_multiplies_follow_the_width_fit():
    from simulator.energy.primitives import int_add_pj

    scaled = Scaled(at_45nm(), TABLE, RULE)
    expected = {8: 0.03, 12: 0.04, 16: 0.05, 24: 0.075, 32: 0.1, 48: 0.15, 4: 0.015}
    assert {bits: int_add_pj(scaled, bits) for bits in expected} == pytest.approx(expected)
    q = math.log(3.1 / 0.2) / math.log(4)  # the exponent through (8, 0.2) and (32, 3.1)
    assert int_mult_pj(scaled, 4, 4) == pytest.approx(0.2 * (16 / 64) ** (q / 2))
    assert int_mult_pj(scaled, 4, 8) == pytest.approx(0.2 * (32 / 64) ** (q / 2))
    costs = action_costs(at_45nm())
    assert costs.mac_pj["int4"] == pytest.approx(0.2 * (16 / 64) ** (q / 2) + 0.1)


def test_a_float_accumulator_is_fp32_or_fp16_and_nothing_else():
    from workloads.errors import InputError

    half = action_costs(at_45nm(accumulator_bits=16))
    assert half.mac_pj["fp16"] == pytest.approx(1.1 + 0.4)
    assert half.mac_pj["int8"] == pytest.approx(0.2 + 0.05)  # a 16-bit integer accumulate
    with pytest.raises(InputError, match="float accumulator of 24 bits"):
        action_costs(at_45nm(accumulator_bits=24))


def test_fp8_and_block_formats_computed_natively_are_priced_from_their_element_multiply():
    """FP8 elements: the table's derived multiply (fp16's x s^2/121) plus the fp32 accumulate; MX adds
    one exponent add (int8_add) per block of 32 MACs, NVFP4 one E4M3 multiply per block of 16."""
    formats = {"fp16": 2, "fp8_e4m3": 4, "fp8_e5m2": 4, "mxfp8": 4, "mxfp6": 4, "mxfp4": 8, "nvfp4": 8, "mxint8": 4,
               "int8": 8}
    costs = action_costs(at_45nm(macs_per_pe=formats))
    mac = costs.mac_pj
    assert mac["fp8_e4m3"] == pytest.approx(1.1 * 16 / 121 + 0.9)
    assert mac["fp8_e5m2"] == pytest.approx(1.1 * 9 / 121 + 0.9)
    assert mac["mxfp8"] == pytest.approx(1.1 * 16 / 121 + 0.9 + 0.03 / 32)
    assert mac["mxfp6"] == pytest.approx(1.1 * 16 / 121 + 0.9 + 0.03 / 32)  # e2m3: 4 significand bits
    assert mac["mxfp4"] == pytest.approx(1.1 * 4 / 121 + 0.9 + 0.03 / 32)
    assert mac["nvfp4"] == pytest.approx(1.1 * 4 / 121 + 0.9 + 1.1 * 16 / 121 / 16)
    assert mac["mxint8"] == pytest.approx(0.2 + 0.1 + 0.03 / 32)
    assert mac["mxfp4"] < mac["fp8_e5m2"] < mac["fp8_e4m3"] < mac["fp16"]
    for name, entry in TABLE.entries.items():
        if name.startswith(("fp8_", "fp6_", "fp4_")):  # every derived entry is fp16_mult x (s x s)/121
            significand = {"e4m3": 4, "e5m2": 3, "e2m3": 4, "e3m2": 3, "e2m1": 2}[name.split("_")[1]]
            assert entry.value == pytest.approx(1.1 * significand**2 / 121, abs=1e-6), name


def test_fp8_runs_priced_on_an_array_with_fp8_units():
    hardware = at_45nm(macs_per_pe={"fp16": 2, "fp8_e4m3": 4, "int8": 8})
    fp8 = load_run_config("configs/fp8.yaml")
    trace = one_gemm(64, 256, 128)
    fp8_row, fp16_row = (row(simulate(trace, hardware, policy)) for policy in (fp8, FP16))
    assert fp8_row["compute_precision"] == "fp8_e4m3"
    assert fp8_row["mac_pj"] == pytest.approx(64 * 256 * 128 * (1.1 * 16 / 121 + 0.9))
    assert fp8_row["mac_pj"] < fp16_row["mac_pj"]
