"""Many-chip generation speed (not a test): Llama-2-70B int8 over tpu_v5e_x8, tensor-parallel 8 ways,
prompt 512, 128 new tokens (the issue's command); also pipeline stages and Mixtral split over experts.

Run: .venv/bin/python benchmarks/bench_systems.py
Target (issue: many chips): the 70B generation under 2 s warm (a second run in the same process: the
Numba cache and the product-shape memo filled, every trace built and lowered anew).
"""

from __future__ import annotations

import time

from simulator.analysis.generation import generate
from simulator.engine import Simulator
from simulator.spec.run_config import load_run_config
from simulator.spec.system import load_target
from workloads.models import Workload, load_model

TARGET_S = 2.0
CASES = {
    "llama-2-70b int8, tp 8 on tpu_v5e_x8": ("llama-2-70b", "tpu_v5e_x8", Workload(tokens=512, tp=8), 1),
    "llama-2-70b int8, tp 4 x pp 2, 2 microbatches": ("llama-2-70b", "tpu_v5e_x8",
                                                       Workload(tokens=512, batch=2, tp=4, pp=2), 2),
    "mixtral-8x7b int8, ep 4 on tpu_v5e_x4, batch 4": ("mixtral-8x7b", "tpu_v5e_x4",
                                                        Workload(tokens=512, batch=4, ep=4), 1),
}


def timed(model: str, system: str, workload: Workload, microbatches: int) -> float:
    target = load_target(system)
    simulator = Simulator(target.hardware, load_run_config("int8"), system=target.system)
    start = time.perf_counter()
    generate(load_model(model), workload, 128, simulator, microbatches=microbatches)
    return time.perf_counter() - start


def main() -> None:
    print(f"{'case':<50} {'cold s':>7} {'warm s':>7}")
    for name, case in CASES.items():
        cold = timed(*case)
        warm = timed(*case)
        verdict = (" met" if warm < TARGET_S else " MISSED") if name.startswith("llama-2-70b int8, tp 8") else ""
        print(f"{name:<50} {cold:>7.2f} {warm:>7.2f}{verdict}")


if __name__ == "__main__":
    main()
