"""Serving simulation speed (not a test): `accelsim serve`'s loop on Llama-2-7B int8, one tpu_v5e_like.

Run: .venv/bin/python benchmarks/bench_serve.py [--requests 1000,10000]
Targets (issue: serving): 1,000 chat-like requests (prompts ~1k tokens, outputs ~250) under 5 s,
10,000 under 30 s, on this 2-core machine. Requests arrive at 2 per second (continuous batching) and
at 6 per second (chunked prefill: a loaded chip). Each run starts from a cold iteration memo (a new
process's), after one small run warms the Numba cache; the number of iterations and how they were
costed (summed from parts, probed, whole) are shown. Continuous batching costs its prefills ahead on a
second CPU where there is one (simulator/serving/prefetch.py).
"""

from __future__ import annotations

import argparse
import time

from simulator.engine import Simulator
from simulator.serving.requests import generate_requests, parse_lengths
from simulator.serving.server import ServeSettings
from simulator.serving.session import ServingRunner
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_run_config
from workloads.models import load_model

TARGETS = {1000: 5.0, 10000: 30.0}
SETUPS = {"continuous": (2.0, 4096), "chunked": (6.0, 512)}


def timed(count: int, scheduler: str) -> tuple[float, int, dict[str, int]]:
    rate, budget = SETUPS[scheduler]
    runner = ServingRunner(load_model("llama-2-7b"), Simulator(load_hardware("tpu_v5e_like"), load_run_config("int8")),
                           ServeSettings(scheduler, 256, budget), 16, "int8")
    requests = generate_requests(count, rate, parse_lengths("lognormal:1000,0.5,2048", "p"),
                                 parse_lengths("lognormal:250,0.5,1024", "o"), 0)
    start = time.perf_counter()
    run = runner.run(requests, None)
    return time.perf_counter() - start, run.summary["iterations"], dict(runner.coster.counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", default="1000,10000")
    counts = [int(n) for n in parser.parse_args().requests.split(",")]
    timed(5, "continuous")  # the Numba cache
    print(f"{'requests':>9} {'scheduler':>11} {'s':>8} {'target s':>9} {'iterations':>11}  costed")
    for count in counts:
        for scheduler in SETUPS:
            seconds, iterations, costed = timed(count, scheduler)
            target = TARGETS.get(count)
            verdict = "" if target is None else "met" if seconds < target else "MISSED"
            print(f"{count:>9} {scheduler:>11} {seconds:>8.1f} {target or float('nan'):>9.1f} {iterations:>11}  "
                  f"{costed} {verdict}")


if __name__ == "__main__":
    main()
