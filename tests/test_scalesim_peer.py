"""accelsim's `scalesim` timing against SCALE-Sim 3.0.0 itself, run as a subprocess.

SCALE-Sim needs numpy < 2.4, so it lives in its own virtual environment (`make test` creates
.venv-scalesim; ACCELSIM_SCALESIM_PYTHON points elsewhere). A missing SCALE-Sim fails the test.
"""

import csv
import os
import subprocess
from pathlib import Path

import pytest

from simulator.timing import SparsityPattern, gemm_cycles

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SCALESIM_PYTHON = Path(os.environ.get("ACCELSIM_SCALESIM_PYTHON", ROOT / ".venv-scalesim" / "bin" / "python"))

CONFIG = """[general]
run_name = accelsim_check

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = 1024
FilterSramSzkB = 1024
OfmapSramSzkB = 1024
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Bandwidth = 10
Dataflow = {dataflow}
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
FilterCustomLayout = False
IfmapSRAMBankBandwidth = 10
IfmapSRAMBankNum = 10
IfmapSRAMBankPort = 2
FilterSRAMBankBandwidth = 10
FilterSRAMBankNum = 10
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = {sparse}
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 4
RandomNumberGeneratorSeed = 40

[run_presets]
InterfaceBandwidth = CALC
UseRamulatorTrace = False
"""

SHAPES = [(20, 13, 9), (7, 5, 30), (33, 40, 17), (64, 64, 64), (1, 100, 3)]  # (M, K, N)
ARRAYS = [(8, 8), (8, 4), (4, 16)]
PATTERNS = [SparsityPattern(2, 4), SparsityPattern(1, 4), SparsityPattern(3, 4)]


def run_scalesim(tmp_path: Path, rows: int, cols: int, dataflow: str, layers: list, sparse: bool) -> list[int]:
    """SCALE-Sim's compute cycles ("Total Cycles") for GEMM layers [(M, K, N, pattern or None)]."""
    assert SCALESIM_PYTHON.exists(), f"SCALE-Sim not installed at {SCALESIM_PYTHON}: run `make test`"
    (tmp_path / "scale.cfg").write_text(CONFIG.format(rows=rows, cols=cols, dataflow=dataflow,
                                                      sparse="true" if sparse else "false"))
    topology = ["Layer, M, N, K, Sparsity,"]
    topology += [f"g{i}, {m}, {n}, {k}, {p.n}:{p.m}," if p else f"g{i}, {m}, {n}, {k},"
                 for i, (m, k, n, p) in enumerate(layers)]
    (tmp_path / "topo.csv").write_text("\n".join(topology) + "\n")
    (tmp_path / "layout.csv").write_text("Layer, unused,\n" + "".join(f"g{i}, 1,\n" for i in range(len(layers))))
    subprocess.run([str(SCALESIM_PYTHON), "-m", "scalesim.scale", "-c", "scale.cfg", "-t", "topo.csv",
                    "-l", "layout.csv", "-p", "out", "-i", "gemm", "-s", "N"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=600)
    report = tmp_path / "out" / "accelsim_check" / "COMPUTE_REPORT.csv"
    with report.open() as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        return [int(row["Total Cycles"]) for row in reader]


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
