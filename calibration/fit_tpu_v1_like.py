"""Calibrate tpu_v1_like's uncore power on its calibration point: the TPU v1 die's idle power
(reference/silicon/tpu_v1.yaml, Jouppi et al., ISCA 2017, Table 2).

An idle chip draws its leakage and its uncore power (clock tree, control, I/O); accelsim prices the
leakage of the PEs, buffers and vector unit from its tables, so ``energy.uncore_mw`` is the measured idle
power less that leakage, rounded to 0.1 mW. The busy power stays a prediction.

Run: python calibration/fit_tpu_v1_like.py   (prints the fitted value; the preset must hold it)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.fitted import report
from simulator.energy.accounting import static_mw
from simulator.energy.action_costs import action_costs
from simulator.spec.hardware import Hardware, load_hardware
from simulator.spec.silicon import SILICON_DIR, SiliconData, load_silicon

DATA = SILICON_DIR / "tpu_v1.yaml"


def unfitted(preset: Hardware) -> Hardware:
    """The preset without uncore power."""
    data = preset.model_dump()
    data["energy"] = {**data["energy"], "uncore_mw": 0.0}
    return Hardware.model_validate(data)


def fit(data: SiliconData, base: Hardware) -> dict[str, Any]:
    (idle,) = [p for p in data.points if p.calibration and p.workload.op == "idle"]
    leakage_mw = static_mw(action_costs(base))
    return {"energy.uncore_mw": round(idle.measured * 1e3 - leakage_mw, 1)}


def preset_values(preset: Hardware) -> dict[str, Any]:
    assert preset.energy is not None
    return {"energy.uncore_mw": preset.energy.uncore_mw}


def main() -> None:
    preset = load_hardware("tpu_v1_like")
    report("tpu_v1_like", fit(load_silicon(DATA), unfitted(preset)), preset_values(preset))

if __name__ == "__main__":
    main()
