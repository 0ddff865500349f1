"""Driving SCALE-Sim 3.0.0 as a peer (subprocess in its own venv, as it needs numpy < 2.4).

Used by the peer cross-check tests and the speed benchmark; ``make install`` creates .venv-scalesim,
and ACCELSIM_SCALESIM_PYTHON points at another interpreter that has ``scalesim`` installed.
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

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

def run_scalesim(workdir: Path, rows: int, cols: int, dataflow: str, layers: list, sparse: bool,
                 timeout_s: float = 600) -> list[int]:
    """SCALE-Sim's compute cycles ("Total Cycles") for GEMM layers [(M, K, N, pattern or None)]."""
    if not SCALESIM_PYTHON.exists():
        raise FileNotFoundError(f"SCALE-Sim not installed at {SCALESIM_PYTHON}: run `make install`")
    (workdir / "scale.cfg").write_text(CONFIG.format(rows=rows, cols=cols, dataflow=dataflow,
                                                      sparse="true" if sparse else "false"))
    topology = ["Layer, M, N, K, Sparsity,"]
    topology += [f"g{i}, {m}, {n}, {k}, {p.n}:{p.m}," if p else f"g{i}, {m}, {n}, {k},"
                 for i, (m, k, n, p) in enumerate(layers)]
    (workdir / "topo.csv").write_text("\n".join(topology) + "\n")
    (workdir / "layout.csv").write_text("Layer, unused,\n" + "".join(f"g{i}, 1,\n" for i in range(len(layers))))
    subprocess.run([str(SCALESIM_PYTHON), "-m", "scalesim.scale", "-c", "scale.cfg", "-t", "topo.csv",
                    "-l", "layout.csv", "-p", "out", "-i", "gemm", "-s", "N"],
                   cwd=workdir, check=True, capture_output=True, timeout=timeout_s)
    report = workdir / "out" / "accelsim_check" / "COMPUTE_REPORT.csv"
    with report.open() as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        return [int(row["Total Cycles"]) for row in reader]
