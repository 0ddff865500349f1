"""Driving GenZ (``genz-llm`` 0.0.16) as a peer for the collectives of tensor parallelism (subprocess in its
own venv, like ZigZag and Vidur).

``make install`` creates .venv-genz; ACCELSIM_GENZ_PYTHON points at another interpreter that has GenZ
installed. The script that runs inside that venv is genz_driver.py. GenZ lists one collective per
repeated layer (its model file repeats the block), and reads its link bandwidth "GB/s" as 2^30 bytes/s.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GENZ_PYTHON = Path(os.environ.get("ACCELSIM_GENZ_PYTHON", ROOT / ".venv-genz" / "bin" / "python"))
DRIVER = Path(__file__).resolve().parent / "genz_driver.py"
MARKER = "genz-collectives: "
GIB = 2**30  # GenZ's "GB"


def genz_collectives(model: str, tokens: int, batch: int, tp: int, link_gb: float, latency_us: float,
                     timeout_s: float = 600) -> list[dict[str, Any]]:
    """GenZ's collectives of ``model``'s prefill over ``tp`` chips: name, dimensions, time (ms)."""
    if not GENZ_PYTHON.exists():
        raise FileNotFoundError(f"GenZ not installed at {GENZ_PYTHON}: run `make install`")
    request = {"model": model, "tokens": tokens, "batch": batch, "tp": tp, "link_gb": link_gb,
               "latency_us": latency_us}
    done = subprocess.run([str(GENZ_PYTHON), str(DRIVER)], input=json.dumps(request), text=True,
                          capture_output=True, check=True, timeout=timeout_s)
    line = next(line for line in done.stdout.splitlines() if line.startswith(MARKER))
    return list(json.loads(line[len(MARKER):]))
