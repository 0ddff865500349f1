"""Sweep benchmark (not a test): 1,000 design points x bert-base (full model, int8_sp) on 2 cores.

Run: .venv/bin/python benchmarks/bench_sweep.py
Target (issue: sweeps): under 30 s with the local executor; prints points per second for the local
process pool and for a Dask LocalCluster of the same size, measured side by side in one run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.analysis.sweep import load_sweep
from simulator.cli.sweep_run import make_executor, prepare_out_dir, run_sweep

SWEEP = """name: bench_1000
hardware: rapid_like
axes:
  product:
    array.rows: [4, 8, 12, 16, 24, 32, 48, 64, 96, 128]
    array.cols: [16, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    sfu.lanes: [16, 24, 32, 48, 64, 96, 128, 192, 256, 512]
configs: [int8_sp]
models: [bert-base]
include_head: true
"""


def timed(kind: str, workers: int, workdir: Path, sweep_file: Path) -> tuple[float, int]:
    _, plan = load_sweep(sweep_file)
    out = workdir / kind
    prepare_out_dir(out, plan, resume=False)
    start = time.perf_counter()
    executor, close = make_executor(kind, workers, None)
    try:
        table = run_sweep(plan, out, executor, workers, progress=False)
    finally:
        close()
    return time.perf_counter() - start, len(table)


def main() -> None:
    workers = 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sweep_file = workdir / "sweep.yaml"
        sweep_file.write_text(SWEEP)
        results = {kind: timed(kind, workers, workdir, sweep_file) for kind in ("local", "dask")}
        same = (workdir / "local" / "results.csv").read_bytes() == (workdir / "dask" / "results.csv").read_bytes()
    print(f"1,000 design points x bert-base (every op incl. head, int8_sp + its int8 baseline), {workers} workers")
    for kind, (seconds, points) in results.items():
        print(f"  {kind:<6} {seconds:6.1f} s  {points / seconds:7.1f} points/s")
    local, dask = results["local"][0], results["dask"][0]
    print(f"  Dask overhead: {dask - local:+.1f} s ({100 * (dask / local - 1):+.0f}%); tables identical: {same}; "
          f"target local < 30 s: {'met' if local < 30 else 'MISSED'}")


if __name__ == "__main__":
    main()
