"""CLI wall-time benchmark (not a test): `accelsim reproduce` and `accelsim run`, whole processes.

Run: .venv/bin/python benchmarks/bench_cli.py
Targets (issue: run/report): reproduce under 10 s on 2 cores from a warm Numba cache; run of one model
under 2 s. Each command runs once to warm the cache, then three times; the best and median are shown.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "accelsim reproduce": (["reproduce"], 10.0),
    "accelsim run configs/int4_sp.yaml --model bert-base": (["run", "configs/int4_sp.yaml", "--model", "bert-base"],
                                                             2.0),
    "accelsim run configs/int8_sp.yaml --model wav2vec2-large": (
        ["run", "configs/int8_sp.yaml", "--model", "wav2vec2-large"], 2.0),
}


def wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "simulator.cli.main", *args], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    print(f"{'command':<58} {'best s':>7} {'median s':>9} {'target s':>9}")
    for label, (args, target) in COMMANDS.items():
        wall(args)  # warm the Numba cache and the OS file cache
        times = [wall(args) for _ in range(3)]
        verdict = "met" if min(times) < target else "MISSED"
        print(f"{label:<58} {min(times):>7.2f} {statistics.median(times):>9.2f} {target:>9.1f}  {verdict}")


if __name__ == "__main__":
    main()
