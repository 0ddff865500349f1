"""Driving Vidur 0.0.26 as a peer for the serving schedulers (subprocess in its own venv, like ZigZag).

``make install`` creates .venv-vidur; ACCELSIM_VIDUR_PYTHON points at another interpreter that has Vidur
installed. The script that runs inside that venv is vidur_driver.py. Both simulators time each batch by
the same closed form (:class:`ClosedFormCoster` here, the driver's predictor there), so what is compared
is the scheduling: which requests run in which iteration, and when each request's tokens come out.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.serving.iteration import IterationCost
from workloads.mixed import MixedBatch

ROOT = Path(__file__).resolve().parent.parent
VIDUR_PYTHON = Path(os.environ.get("ACCELSIM_VIDUR_PYTHON", ROOT / ".venv-vidur" / "bin" / "python"))
DRIVER = Path(__file__).resolve().parent / "vidur_driver.py"
MARKER = "vidur-requests: "


@dataclass(frozen=True)
class ClosedFormCoster:
    """An iteration's time: ``fixed`` + ``per_token`` x new tokens + ``per_sequence`` x sequences, in
    cycles of a ``clock_hz`` clock (so that both simulators add the same exact times); no energy."""

    fixed: int
    per_token: int
    per_sequence: int
    clock_hz: float
    static_mw: float = 0.0

    def cost(self, batch: MixedBatch) -> IterationCost:
        cycles = self.fixed + self.per_token * batch.tokens + self.per_sequence * len(batch.sequences)
        return IterationCost(cycles, cycles / self.clock_hz, 0, 0.0)

    def seconds(self) -> dict[str, float]:
        return {"fixed": self.fixed / self.clock_hz, "per_token": self.per_token / self.clock_hz,
                "per_sequence": self.per_sequence / self.clock_hz}


def run_vidur(trace: Path, scheduler: str, max_batch: int, max_tokens: int, block_size: int, num_blocks: int,
              coster: ClosedFormCoster, timeout_s: float = 600) -> list[dict[str, Any]]:
    """Every request's arrival, first-token and completion times (s) and restarts under Vidur's
    ``scheduler`` ("vllm" or "sarathi")."""
    if not VIDUR_PYTHON.exists():
        raise FileNotFoundError(f"Vidur not installed at {VIDUR_PYTHON}: run `make install`")
    request = {"trace": str(trace), "scheduler": scheduler, "max_batch": max_batch, "max_tokens": max_tokens,
               "block_size": block_size, "num_blocks": num_blocks, "cost": coster.seconds()}
    done = subprocess.run([str(VIDUR_PYTHON), str(DRIVER)], input=json.dumps(request), text=True,
                          capture_output=True, check=True, timeout=timeout_s)
    line = next(line for line in done.stdout.splitlines() if line.startswith(MARKER))
    return json.loads(line[len(MARKER):])
