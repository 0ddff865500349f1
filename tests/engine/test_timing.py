"""Systolic timing: SCALE-Sim's published counts, closed-form invariants, Numba == plain Python."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.engine.mapping import DATAFLOWS, effective_depth, fold_count
from simulator.engine.masks import (
    magnitude_mask,
    masked_cycles,
    masked_cycles_reference,
    nm_mask,
    pattern_violation,
)
from simulator.engine.timing import (
    dense_cycles,
    gemm_cycles,
    pipelined_cycles,
    uniform_pipelined_cycles,
)
from simulator.formats.sparsity import SparsityPattern
from workloads.errors import InputError

# SCALE-Sim 3.0.0 compute cycles for BERT-base GEMMs (M, K, N), K = reduction.
SCALESIM_KNOWN = [
    ((384, 768, 3072), 32, 32, "ws", 1101311),
    ((384, 768, 3072), 32, 32, "os", 956159),
    ((384, 768, 3072), 128, 128, "ws", 110303),
    ((384, 768, 3072), 128, 128, "os", 73583),
    ((384, 768, 3072), 128, 128, "is", 62171),
    ((384, 64, 384), 32, 32, "os", 18143),
]


@pytest.mark.parametrize(("mkn", "rows", "cols", "dataflow", "cycles"), SCALESIM_KNOWN)
def test_scalesim_published_counts(mkn, rows, cols, dataflow, cycles):
    assert gemm_cycles(*mkn, rows, cols, dataflow, timing="scalesim").compute_cycles == cycles


@pytest.mark.parametrize(("mkn", "rows", "cols", "dataflow", "cycles"), [
    # L + (F - 1) x max(T, L) + T + (R + C - 2), worked by hand (issue 16's examples first)
    ((384, 768, 768), 32, 32, "ws", 32 + 575 * 384 + 384 + 62),  # 221,278
    ((1, 4096, 4096), 128, 128, "ws", 128 + 1023 * 128 + 1 + 254),  # 131,327: decode is load-bound
    ((384, 768, 3072), 8, 64, "ws", 8 + (96 * 48 - 1) * 384 + 384 + 70),
    ((384, 768, 3072), 32, 32, "os", 0 + (12 * 96 - 1) * 768 + 768 + 62),  # os: no tile to load first
    ((4, 3, 5), 8, 2, "os", 0 + (3 - 1) * 8 + 3 + 8),  # os gap max(T, R) = R: the drain port
    ((10, 64, 20), 16, 16, "is", 16 + (4 * 1 - 1) * 20 + 20 + 30),
    ((60, 1, 1), 1, 1, "ws", 1 + 60),  # a T-MAC product on a 1x1 array: T + the weight load in ws/is
    ((1, 60, 1), 1, 1, "os", 60),  # ... and T in os
])
def test_pipelined_folds_by_hand(mkn, rows, cols, dataflow, cycles):
    assert gemm_cycles(*mkn, rows, cols, dataflow).compute_cycles == cycles


def test_batched_products_are_more_folds_of_one_pipeline():
    # 12 attention heads of (384 x 64) @ (64 x 384) on 32 x 32 ws: 12 x 2 x 12 folds, one fill/drain
    assert gemm_cycles(384, 64, 384, 32, 32, "ws", batch=12).compute_cycles == 32 + (288 - 1) * 384 + 384 + 62
    # SCALE-Sim runs each product alone
    one = gemm_cycles(384, 64, 384, 32, 32, "ws", timing="scalesim").compute_cycles
    assert gemm_cycles(384, 64, 384, 32, 32, "ws", batch=12, timing="scalesim").compute_cycles == 12 * one


def _previous_default(m: int, depth: int, n: int, rows: int, cols: int, dataflow: str, batch: int) -> int:
    """accelsim's timing before pipelined folds: the first preload, then every fold drains (R + C + T - 2)."""
    streamed = {"os": depth, "ws": m, "is": n}[dataflow]
    folds = batch * fold_count(m, depth, n, rows, cols, dataflow)
    return (0 if dataflow == "os" else rows) + folds * (rows + cols + streamed - 2)


@settings(max_examples=300, deadline=None)
@given(m=st.integers(1, 5000), k=st.integers(1, 5000), n=st.integers(1, 5000), rows=st.integers(1, 256),
       cols=st.integers(1, 256), dataflow=st.sampled_from(DATAFLOWS), pack=st.sampled_from([1, 2, 4, 8]),
       batch=st.integers(1, 16))
def test_pipelined_folds_are_bounded(m, k, n, rows, cols, dataflow, pack, batch):
    result = gemm_cycles(m, k, n, rows, cols, dataflow, pack=pack, batch=batch)
    depth = result.reduction_depth
    assert result.compute_cycles <= _previous_default(m, depth, n, rows, cols, dataflow, batch)
    mac_bound = -(-batch * m * k * n // (rows * cols * pack))
    assert result.compute_cycles >= max(mac_bound, result.folds * rows)
    assert 0 < result.utilization(rows, cols, pack) <= 1


def test_no_overflow_on_huge_products():
    result = gemm_cycles(10**9, 10**5, 10**5, 128, 128, "os")
    assert result.compute_cycles > 2**63 // 10**10
    assert result.macs == 10**19


@pytest.mark.parametrize(("k", "pattern", "kept"), [(768, "2:4", 384), (770, "2:4", 386), (769, "2:4", 385),
                                                    (10, "1:8", 2), (9, "3:8", 4), (8, "4:4", 8)])
def test_nm_kept_handles_tail(k, pattern, kept):
    assert SparsityPattern.parse(pattern).kept(k) == kept


def test_scalesim_sparse_mode_pads_tail():
    assert SparsityPattern.parse("2:4").kept(769, "scalesim") == 386


@pytest.mark.parametrize("text", ["3:2", "0:4", "a:b", "2-4", "2:0"])
def test_bad_patterns(text):
    with pytest.raises(InputError):
        SparsityPattern.parse(text)


dims = st.integers(min_value=1, max_value=70)
arrays = st.integers(min_value=1, max_value=16)


@settings(max_examples=150, deadline=None)
@given(m=dims, k=dims, n=dims, rows=arrays, cols=arrays, dataflow=st.sampled_from(DATAFLOWS),
       timing=st.sampled_from(["default", "scalesim"]), pack=st.sampled_from([1, 2, 4]))
def test_structured_equals_dense_at_reduced_depth_and_is_never_slower(m, k, n, rows, cols, dataflow, timing, pack):
    pattern = SparsityPattern(2, 4)
    sparse = gemm_cycles(m, k, n, rows, cols, dataflow, pack=pack, sparsity=pattern, timing=timing)
    dense = gemm_cycles(m, k, n, rows, cols, dataflow, pack=pack, timing=timing)
    reduced = -(-pattern.kept(k, timing, dataflow) // pack)
    assert sparse.compute_cycles == dense_cycles(m, reduced, n, rows, cols, dataflow, timing)
    if timing == "default":  # SCALE-Sim pads a short tail to a whole group, so K < M can cost more there
        assert sparse.compute_cycles <= dense.compute_cycles
    cycle_count = dense.compute_cycles + (1 if timing == "scalesim" else 0)  # SCALE-Sim: last cycle's index
    assert cycle_count * rows * cols * pack >= m * k * n  # no more than `pack` MACs per PE per cycle
    if timing == "default":
        assert 0 < dense.utilization(rows, cols, pack) <= 1


@settings(max_examples=200, deadline=None)
@given(m=dims, k=dims, n=dims, rows=arrays, cols=arrays, dataflow=st.sampled_from(DATAFLOWS),
       timing=st.sampled_from(["default", "scalesim"]), pack=st.sampled_from([1, 2, 4]),
       density=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_numba_kernel_equals_reference(m, k, n, rows, cols, dataflow, timing, pack, density, seed):
    mask = magnitude_mask(k, n, density, seed)
    fast = masked_cycles(mask, m, rows, cols, dataflow, pack=pack, timing=timing)
    slow = masked_cycles_reference(mask, m, rows, cols, dataflow, pack=pack, timing=timing)
    assert fast == slow


@settings(max_examples=100, deadline=None)
@given(m=dims, groups=st.integers(1, 20), n=dims, rows=arrays, cols=arrays, dataflow=st.sampled_from(DATAFLOWS),
       timing=st.sampled_from(["default", "scalesim"]), seed=st.integers(0, 2**16))
def test_masks_reproduce_dense_and_structured(m, groups, n, rows, cols, dataflow, timing, seed):
    k = 4 * groups
    dense = gemm_cycles(m, k, n, rows, cols, dataflow, timing=timing)
    assert masked_cycles(np.ones((k, n), bool), m, rows, cols, dataflow, timing=timing)[:2] == (
        dense.compute_cycles, dense.folds)
    sparse = gemm_cycles(m, k, n, rows, cols, dataflow, sparsity=SparsityPattern(2, 4), timing=timing)
    cycles, folds, macs = masked_cycles(nm_mask(k, n, 2, 4, seed), m, rows, cols, dataflow, timing=timing)
    assert (cycles, folds, macs) == (sparse.compute_cycles, sparse.folds, sparse.macs)


def first_violation(mask: np.ndarray, keep: int, group: int):
    """Plain-Python :func:`pattern_violation`: groups in K order, columns in order within a group."""
    k, n = mask.shape
    for start in range(0, k, group):
        for col in range(n):
            if sum(bool(mask[row, col]) for row in range(start, min(start + group, k))) > keep:
                return start, col
    return None


@settings(max_examples=150, deadline=None)
@given(k=st.integers(1, 23), n=st.integers(1, 9), keep=st.integers(1, 4), group=st.integers(1, 8),
       density=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_the_pattern_check_finds_the_first_group_keeping_too_many(k, n, keep, group, density, seed):
    mask = np.random.default_rng(seed).random((k, n)) < density
    assert pattern_violation(mask, keep, group) == first_violation(mask, keep, group)
    assert pattern_violation(nm_mask(k, n, min(keep, group), group, seed), min(keep, group), group) is None


def test_magnitude_mask_is_seeded_and_exact_density():
    a, b = magnitude_mask(64, 32, 0.3, 7), magnitude_mask(64, 32, 0.3, 7)
    assert (a == b).all() and a.sum() == round(0.3 * 64 * 32)
    assert not (a == magnitude_mask(64, 32, 0.3, 8)).all()


def test_unstructured_imbalance_costs_more_than_ideal_density():
    mask = magnitude_mask(768, 768, 0.5, 0)
    cycles = masked_cycles(mask, 384, 32, 32, "ws")[0]
    ideal = gemm_cycles(384, 384, 768, 32, 32, "ws").compute_cycles
    assert cycles > ideal


@settings(max_examples=200, deadline=None)
@given(folds=st.integers(0, 40), stream=st.integers(1, 300), rows=st.integers(1, 64), cols=st.integers(1, 64),
       dataflow=st.sampled_from(DATAFLOWS))
def test_fold_list_timing_equals_the_uniform_closed_form(folds, stream, rows, cols, dataflow):
    assert pipelined_cycles([stream] * folds, rows, cols, dataflow) == uniform_pipelined_cycles(
        folds, stream, rows, cols, dataflow)
    if folds == 0:
        assert pipelined_cycles([], rows, cols, dataflow) == 0 == uniform_pipelined_cycles(0, stream, rows, cols,
                                                                                            dataflow)


def test_os_fold_after_a_longer_one_waits_for_its_drain():
    # 4 x 1 array: a 5-deep fold, then a 1-deep one whose result would reach the drain port while the
    # first fold's 4 results leave: the gap is 5 + (4 - 1) = 8, then 1 + (4 + 1 - 2) to finish
    assert pipelined_cycles([5, 1], 4, 1, "os") == 8 + 1 + 3
    assert pipelined_cycles([1, 5], 4, 1, "os") == (1 + 0) + 5 + 3  # a long fold after a short one: no wait
    assert pipelined_cycles([5, 1], 4, 1, "ws") == 4 + 5 + 1 + 3  # ws: the next tile's load bounds the gap


def test_defaults_one_mac_per_pe_and_no_sparsity():
    assert effective_depth(768) == 768
    assert effective_depth(768, sparsity=SparsityPattern(2, 4)) == 384
    assert gemm_cycles(1, 60, 1, 1, 1, "os").utilization(1, 1) == 1.0  # 60 MACs in 60 cycles


def test_scalesim_sparse_depth_reaches_the_timing():
    """SCALE-Sim pads a tail group in ws/is (N x ceil(K/M)) and streams ceil(K x N / M) in os; accelsim's
    own timing keeps min(N, tail) of the tail. gemm_cycles must pass the timing and dataflow through."""
    pattern = SparsityPattern(2, 4)
    assert gemm_cycles(8, 13, 8, 4, 4, "ws", sparsity=pattern, timing="scalesim").reduction_depth == 8
    assert gemm_cycles(8, 13, 8, 4, 4, "ws", sparsity=pattern).reduction_depth == 7
    assert gemm_cycles(8, 14, 8, 4, 4, "os", sparsity=pattern, timing="scalesim").reduction_depth == 7
    assert gemm_cycles(8, 14, 8, 4, 4, "os", sparsity=pattern).reduction_depth == 8


@pytest.mark.parametrize("size, value", [("m", 0), ("k", -4), ("n", 4.5), ("rows", 0), ("cols", True), ("batch", 0),
                                         ("pack", 0)])
def test_a_size_that_is_not_a_positive_whole_number_is_refused(size, value):
    sizes = {"m": 4, "k": 4, "n": 4, "rows": 8, "cols": 8, "batch": 1, "pack": 1, **{size: value}}
    with pytest.raises(InputError, match=f"^{size} must be a positive integer, got {value!r}$"):
        gemm_cycles(sizes["m"], sizes["k"], sizes["n"], sizes["rows"], sizes["cols"], "ws", batch=sizes["batch"],
                    pack=sizes["pack"])
    assert gemm_cycles(np.int64(4), 4, 4, 8, 8, "ws").macs == 64  # numpy's integers are whole numbers
    assert gemm_cycles(np.int64(1), 4, 4, 8, 8, "ws").macs == 16  # down to 1, the smallest size
    with pytest.raises(InputError, match="^m must be a positive integer, got np.int64.0.$"):
        gemm_cycles(np.int64(0), 4, 4, 8, 8, "ws")


def test_an_unknown_dataflow_is_refused_as_the_command_refuses_it():
    """gemm_cycles refuses a dataflow by name as `accelsim gemm` does (it was a ValueError from deep inside)."""
    with pytest.raises(InputError, match="^unknown dataflow 'xs'; choose from ws, os, is$"):
        gemm_cycles(4, 4, 4, 8, 8, "xs")
