"""Pipelined ws timing against ZigZag 3.9.1 itself, run as a subprocess in its own venv.

ZigZag charges a GEMM its ideal temporal cycles (the product of its temporal loops: M x K folds x
N folds for the ws mapping D1 <- K, D2 <- N with M innermost) plus one systolic fill/drain per
layer. accelsim's default timing is L + (F - 1) x max(M, L) + M + (R + C - 2) with L = R: minus the
first tile's load, the two agree exactly wherever M >= R. Where M < R, ZigZag's ideal cycles ignore
that a weight tile takes R cycles to shift in; accelsim's bound there is checked against the
cycle-stepping reference instead (tests/test_engine.py). A missing ZigZag fails the test.
"""

import pytest

from simulator.timing import gemm_cycles
from simulator.zigzag_peer import run_zigzag_ws

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
