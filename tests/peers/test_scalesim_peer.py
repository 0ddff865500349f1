"""accelsim's `scalesim` timing against SCALE-Sim 3.0.0 itself, run as a subprocess.

SCALE-Sim needs numpy < 2.4, so it lives in its own virtual environment (`make test` creates
.venv-scalesim; ACCELSIM_SCALESIM_PYTHON points elsewhere). A missing SCALE-Sim fails the test.
"""

import pytest

from simulator.engine.timing import gemm_cycles
from simulator.formats.sparsity import SparsityPattern
from verification.scalesim_peer import run_scalesim

pytestmark = pytest.mark.slow
SHAPES = [(20, 13, 9), (7, 5, 30), (33, 40, 17), (64, 64, 64), (1, 100, 3)]  # (M, K, N)
ARRAYS = [(8, 8), (8, 4), (4, 16)]
PATTERNS = [SparsityPattern(2, 4), SparsityPattern(1, 4), SparsityPattern(3, 4)]



@pytest.mark.parametrize("dataflow", ["ws", "os", "is"])
@pytest.mark.parametrize(("rows", "cols"), ARRAYS)
def test_dense_compute_cycles_identical(tmp_path, rows, cols, dataflow):
    layers = [(m, k, n, None) for m, k, n in SHAPES]
    peer = run_scalesim(tmp_path, rows, cols, dataflow, layers, sparse=False)
    ours = [gemm_cycles(m, k, n, rows, cols, dataflow, timing="scalesim").compute_cycles for m, k, n, _ in layers]
    assert ours == peer


@pytest.mark.parametrize("dataflow", ["ws", "os", "is"])
def test_nm_sparse_compute_cycles_identical(tmp_path, dataflow):
    layers = [(m, k, n, p) for m, k, n in SHAPES[:4] for p in PATTERNS]
    peer = run_scalesim(tmp_path, 8, 4, dataflow, layers, sparse=True)
    ours = [gemm_cycles(m, k, n, 8, 4, dataflow, sparsity=p, timing="scalesim").compute_cycles
            for m, k, n, p in layers]
    assert ours == peer
