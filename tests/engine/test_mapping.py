"""One mapping per dataflow: timing's folds and traffic's partial sums read the same kept depth."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import load_hardware, load_model, load_run_config, simulate
from simulator.engine.mapping import Mapping
from simulator.engine.timing import gemm_cycles
from simulator.formats.sparsity import SparsityPattern
from workloads.models import Workload
from workloads.ops import nm_kept


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@pytest.mark.parametrize(("dataflow", "expected"), [
    # (m, K', n) = (100, 300, 70) on 16 x 32: (streamed, folds, A sweeps, B sweeps, folds along K)
    ("ws", (100, 19 * 3, 3, 1, 19)),
    ("os", (300, 7 * 3, 3, 7, 1)),
    ("is", (70, 19 * 4, 1, 4, 19)),
])
def test_mapping_table_by_hand(dataflow, expected):
    placed = Mapping(100, 300, 70, 16, 32, dataflow)
    assert (placed.streamed, placed.folds, placed.a_sweeps, placed.b_sweeps, placed.k_folds) == expected


def test_depth_is_the_kept_weights_packed():
    assert Mapping.of(8, 769, 8, 4, 4, "ws", pack=2, sparsity=SparsityPattern(2, 4)).depth == ceil_div(385, 2)
    assert Mapping.of(8, 769, 8, 4, 4, "ws", sparsity=SparsityPattern(2, 4), timing="scalesim").depth == 386


def test_a_pruned_linear_under_2_4_follows_the_kept_depth_in_folds_psums_and_ofmap_writes():
    """Issue 25, wrong answer 3: BERT-base's ffn2 (384 x 3072 x 768) under int4_sp on rapid_like (8 x 64, ws,
    16 INT4 MACs per PE). K' = ceil(kept(3072) / 16) = 96: 12 folds along K over 12 column tiles."""
    hardware = load_hardware("rapid_like")
    trace = load_model("bert-base").trace(Workload(tokens=384))
    sparse = simulate(trace, hardware, load_run_config("int4_sp"))
    dense = simulate(trace, hardware, load_run_config("int4"))
    row = sparse[(sparse.role == "ffn2") & (sparse.unit == "array")].iloc[0]
    dense_row = dense[(dense.role == "ffn2") & (dense.unit == "array")].iloc[0]
    assert (row.m, row.k, row.n, row.macs_per_pe, row.sparsity) == (384, 3072, 768, 16, "2:4")
    depth = ceil_div(nm_kept(3072, 2, 4), 16)
    k_folds = ceil_div(depth, 8)
    assert k_folds == 12 and row.folds == k_folds * ceil_div(768, 64)
    accumulator_bytes = hardware.accumulator_bits // 8
    assert row.ofmap_write_bytes == row.ofmap_read_bytes == 384 * 768 * accumulator_bytes * k_folds
    assert row.array_psum_updates == ceil_div(row.macs, 16) == 384 * depth * 768
    # Against the dense product: everything that follows the depth halves, the output does not.
    assert 2 * row.folds == dense_row.folds and 2 * row.ofmap_write_bytes == dense_row.ofmap_write_bytes
    assert 2 * row.array_psum_updates == dense_row.array_psum_updates


@settings(max_examples=25, deadline=None)
@given(tokens=st.integers(1, 200), config=st.sampled_from(["int4_sp", "int8_sp", "w4a16_g128_sp"]))
def test_every_skipped_product_writes_partial_sums_once_per_fold_along_k(tokens, config):
    """Invariant: on a one-array ws chip, folds = folds along K x column tiles, and the accumulator takes
    one partial sum per output per fold along K: ofmap writes / (outputs x accumulator bytes) x column
    tiles = folds."""
    hardware = load_hardware("rapid_like")
    results = simulate(load_model("bert-base").trace(Workload(tokens=tokens)), hardware, load_run_config(config))
    products = results[(results.unit == "array") & (results.folds > 0)]
    assert (products.sparsity == "2:4").any()
    accumulator_bytes = hardware.accumulator_bits // 8
    for row in products.itertuples():
        outputs = row.batch * row.m * row.n
        per_product_tiles = ceil_div(row.n, hardware.array.cols) * (row.batch if row.kind == "bmm" else 1)
        assert row.ofmap_write_bytes * per_product_tiles == outputs * accumulator_bytes * row.folds, row.name


def test_gemm_cycles_reads_the_mapping():
    for dataflow in ("ws", "os", "is"):
        cycles = gemm_cycles(300, 1000, 200, 16, 32, dataflow, pack=2, sparsity=SparsityPattern(1, 4))
        placed = Mapping.of(300, 1000, 200, 16, 32, dataflow, pack=2, sparsity=SparsityPattern(1, 4))
        assert (cycles.folds, cycles.reduction_depth) == (placed.folds, placed.depth)
