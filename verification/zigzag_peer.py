"""Driving ZigZag 3.9.1 as a peer (subprocess in its own venv, like SCALE-Sim).

``make install`` creates .venv-zigzag (``zigzag-dse==3.9.1`` plus ``six``, which it imports without
declaring); ACCELSIM_ZIGZAG_PYTHON points at another interpreter that has ZigZag installed. The
script that runs inside that venv is zigzag_driver.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZIGZAG_PYTHON = Path(os.environ.get("ACCELSIM_ZIGZAG_PYTHON", ROOT / ".venv-zigzag" / "bin" / "python"))
DRIVER = Path(__file__).resolve().parent / "zigzag_driver.py"


def _run(request: dict, timeout_s: float) -> list[dict]:
    if not ZIGZAG_PYTHON.exists():
        raise FileNotFoundError(f"ZigZag not installed at {ZIGZAG_PYTHON}: run `make install`")
    done = subprocess.run([str(ZIGZAG_PYTHON), str(DRIVER)], input=json.dumps(request), text=True,
                          capture_output=True, check=True, timeout=timeout_s)
    return json.loads(done.stdout)


def run_zigzag_ws(cases: list[tuple[int, int, int, int, int]], timeout_s: float = 600) -> list[dict]:
    """ZigZag's cost-model terms for dense GEMMs (M, K, N, rows, cols) on a weight-stationary array."""
    return _run({"cases": cases}, timeout_s)


def run_zigzag_energy(cases: list[tuple[int, int, int, int, int, dict]], timeout_s: float = 600) -> list[dict]:
    """ZigZag's access counts and energies for dense GEMMs (M, K, N, rows, cols, costs) on a ws array
    priced by each case's ``costs`` (see zigzag_driver.energy_hardware), in one ZigZag process."""
    return _run({"energy_cases": cases}, timeout_s)
