"""Pipelined ws timing against ZigZag 3.9.1 itself, run as a subprocess in its own venv.

ZigZag charges a GEMM its ideal temporal cycles (the product of its temporal loops: M x K folds x
N folds for the ws mapping D1 <- K, D2 <- N with M innermost) plus one systolic fill/drain per
layer. accelsim's default timing is L + (F - 1) x max(M, L) + M + (R + C - 2) with L = R: minus the
first tile's load, the two agree exactly wherever M >= R. Where M < R, ZigZag's ideal cycles ignore
that a weight tile takes R cycles to shift in; accelsim's bound there is checked against the
cycle-stepping reference instead (tests/engine/test_engine.py). A missing ZigZag fails the test.
"""

import pytest
from conftest import preset_with

from simulator.energy.action_costs import action_costs
from simulator.engine import simulate
from simulator.engine.timing import gemm_cycles
from simulator.spec.hardware import Hardware
from simulator.spec.run_config import load_run_config
from verification.zigzag_peer import run_zigzag_energy, run_zigzag_ws
from workloads.builder import OpBuilder

pytestmark = pytest.mark.slow

# (M, K, N, rows, cols): BERT-base shapes, ragged edges, tall and wide arrays, and two with M < R.
AGREE = [(384, 768, 768, 32, 32), (384, 768, 3072, 8, 64), (100, 70, 50, 8, 8), (37, 100, 33, 8, 8),
         (384, 64, 384, 32, 32), (128, 4096, 4096, 128, 128), (50, 30, 70, 16, 4)]
LOAD_BOUND = [(16, 4096, 4096, 128, 128), (1, 512, 512, 64, 64)]


@pytest.fixture(scope="module")
def zigzag():
    return dict(zip(AGREE + LOAD_BOUND, run_zigzag_ws(AGREE + LOAD_BOUND), strict=True))


@pytest.mark.parametrize("case", AGREE)
def test_compute_cycles_equal_zigzag_ideal_plus_fill_drain(zigzag, case):
    m, k, n, rows, cols = case
    peer = zigzag[case]
    assert peer["systolic_drain_cycle"] == rows + cols - 2
    ours = gemm_cycles(m, k, n, rows, cols, "ws").compute_cycles
    assert ours - rows == peer["ideal_temporal_cycle"] + peer["systolic_drain_cycle"]


@pytest.mark.parametrize("case", LOAD_BOUND)
def test_zigzag_ideal_ignores_the_tile_load_where_m_is_below_r(zigzag, case):
    m, k, n, rows, cols = case
    folds = -(-k // rows) * -(-n // cols)
    peer = zigzag[case]
    assert peer["ideal_temporal_cycle"] == m * folds  # M cycles a fold, though a tile takes R to load
    ours = gemm_cycles(m, k, n, rows, cols, "ws").compute_cycles
    assert ours == rows + (folds - 1) * rows + m + rows + cols - 2 > peer["ideal_temporal_cycle"] + rows + cols - 2


# --- energy: access counts per level and energies, with accelsim's per-action costs --------------

FP16 = load_run_config("configs/fp16.yaml")
# (M, K, N, rows, cols) with K and N multiples of the array: ZigZag charges the registers of a partly
# filled fold by its own rule (docs/energy.md), so ragged edges are compared by the cycle tests above only.
ENERGY_CASES = [(384, 768, 768, 32, 32), (256, 1024, 512, 16, 64), (100, 256, 256, 8, 8), (64, 512, 1024, 128, 128)]


def energy_hardware(rows: int, cols: int) -> Hardware:
    """One FP16 ws array at the tables' own node (45 nm, 0.9 V), buffers large enough for every case."""
    return preset_with("rapid_like", array={"rows": rows, "cols": cols}, macs_per_pe={"fp16": 1},
                       sparse={"patterns": [], "unstructured": False},
                       memory={"ifmap_buffer_bytes": 2**24, "filter_buffer_bytes": 2**24, "ofmap_buffer_bytes": 2**24},
                       energy={"node_nm": 45, "vdd_v": 0.9})


def zigzag_costs(hardware: Hardware) -> dict:
    """accelsim's per-action costs, as ZigZag's per-access energies (registers per element, the rest per byte)."""
    costs = action_costs(hardware)
    return {"mac_pj": costs.mac_pj["fp16"], "register_bit_pj": costs.register_bit_pj,
            "buffers": {name: [costs.buffer_read_pj_per_byte[name], costs.buffer_write_pj_per_byte[name]]
                        for name in ("ifmap", "filter", "ofmap")},
            "dram": costs.dram_pj_per_byte, "bits": {"I": 16, "W": 16, "O": 32, "O_final": 16}}


@pytest.fixture(scope="module")
def zigzag_energy():
    priced = [(*case, zigzag_costs(energy_hardware(*case[3:]))) for case in ENERGY_CASES]
    return dict(zip(ENERGY_CASES, run_zigzag_energy(priced), strict=True))


def accelsim_gemm(case: tuple[int, int, int, int, int], accounting: str):
    m, k, n, rows, cols = case
    b = OpBuilder()
    b.input("x", m * k)
    b.gemm("proj", 0, "ffn1", "ffn", m, k, n, bias=False)
    res = simulate(b.build_trace("gemm", {"batch": 1}), energy_hardware(rows, cols), FP16, accounting=accounting)
    assert list(res["name"]) == ["proj"]
    return res.iloc[0]


@pytest.mark.parametrize("case", ENERGY_CASES)
def test_access_counts_per_level_equal_zigzag(zigzag_energy, case):
    z, r = zigzag_energy[case]["accesses"], accelsim_gemm(case, "zigzag")
    m, k, n = case[:3]
    # PE registers, one access = one element
    assert z["W.weight_reg"]["wr_in_by_high"] == z["W.weight_reg"]["rd_out_to_low"] == r["array_weight_loads"]
    assert z["I.act_reg"]["wr_in_by_high"] == z["I.act_reg"]["rd_out_to_low"] == r["array_activation_hops"]
    psum = z["O.psum_reg"]
    assert psum["rd_out_to_low"] == psum["wr_in_by_low"] == psum["rd_out_to_high"] == psum["wr_in_by_high"] \
        == r["array_psum_updates"] == m * k * n
    # buffers and DRAM, one access = one byte
    assert z["I.ifmap_buffer"]["rd_out_to_low"] == r["ifmap_read_bytes"]
    assert z["I.ifmap_buffer"]["wr_in_by_high"] == r["ifmap_write_bytes"] == 2 * m * k
    assert z["W.filter_buffer"]["rd_out_to_low"] == r["filter_read_bytes"]
    assert z["W.filter_buffer"]["wr_in_by_high"] == r["filter_write_bytes"] == 2 * k * n
    ofmap = z["O.ofmap_buffer"]
    assert ofmap["wr_in_by_low"] == r["ofmap_write_bytes"]
    assert ofmap["rd_out_to_low"] + ofmap["rd_out_to_high"] == r["ofmap_read_bytes"]
    assert z["I.dram"]["rd_out_to_low"] + z["W.dram"]["rd_out_to_low"] == r["dram_read_bytes"]
    assert z["O.dram"]["wr_in_by_low"] == r["dram_write_bytes"] == 2 * m * n


@pytest.mark.parametrize("case", ENERGY_CASES)
def test_energy_equals_zigzag_and_default_accounting_differs_by_the_documented_terms(zigzag_energy, case):
    peer, ours = zigzag_energy[case], accelsim_gemm(case, "zigzag")
    m, k, n, rows, cols = case
    costs = action_costs(energy_hardware(rows, cols))
    assert ours["mac_pj"] == pytest.approx(peer["mac_energy"], rel=1e-12)
    assert ours["energy_pj"] == pytest.approx(peer["energy_total"], rel=1e-12)
    default = accelsim_gemm(case, "default")
    output = 2 * m * n  # bytes of the FP16 output
    psum_read_out = m * k * n * 32 * costs.register_bit_pj  # ZigZag's second read of every partial sum
    drain = output * costs.buffer_read_pj_per_byte["ofmap"]  # ZigZag reads the output back out of the ofmap buffer
    through_chip = output * costs.buffer_write_pj_per_byte["ifmap"]  # accelsim writes it where a next op would read
    assert default["energy_pj"] == pytest.approx(
        peer["energy_total"] - psum_read_out - drain + through_chip + default["idle_pj"], rel=1e-12)
