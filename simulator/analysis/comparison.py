"""A run next to what it is compared with: its config's dense baseline, dense FP16 and the chip's own dense
format (its vector unit's: fp16 or bf16) on the same chip."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simulator.engine import Results, Simulator
from simulator.plan.binding import Plan
from simulator.spec.run_config import Policy, policy_from_dict
from workloads.errors import InputError
from workloads.ops import Op, Trace


@dataclass(frozen=True)
class Comparison:
    """A run's results, the plan it ran under, and its comparison runs (None where there is none)."""

    results: Results
    plan: Plan
    baseline: Policy | None
    baseline_results: Results | None
    fp16_results: Results | None  # None when the chip has no FP16 path
    native_results: Results | None  # dense in the chip's vector-unit format (the fp16 run's when that is fp16)

    @property
    def results_name(self) -> str:
        """The run config's name."""
        return self.plan.policy.name


def compare(trace: Trace, simulator: Simulator, baseline: Policy | None) -> Comparison:
    """Run ``trace`` on ``simulator``, then its dense ``baseline``, dense FP16 and dense native on the same chip
    with the same timing and accounting; a comparison config that simulates the same as the run (or as
    another comparison) is not run again."""
    results = simulator.run(trace)
    hardware, policy = simulator.hardware, simulator.policy

    done: list[tuple[Policy, Results]] = [(policy, results)]

    def same_or_run(other: Policy, mask_for: Callable[[Op], np.ndarray] | None = None) -> Results:
        for ran, its_results in done:
            if other.config.same_simulation(ran.config):
                return its_results
        other_results = Simulator(hardware, other, timing=simulator.timing, mask_for=mask_for,
                                  accounting=simulator.accounting).run(trace)
        done.append((other, other_results))
        return other_results

    baseline_results = same_or_run(baseline) if baseline is not None else None
    fp16 = policy_from_dict({"name": "fp16_dense", "hardware": hardware.name, "precision": {"default": "fp16"}})
    try:
        fp16_results: Results | None = same_or_run(fp16)
    except InputError:  # no float path on this chip
        fp16_results = None
    native_results: Results | None = fp16_results
    if hardware.sfu_precision.name != "fp16":
        native = policy_from_dict({"name": "native_dense", "hardware": hardware.name,
                                   "precision": {"default": "native"}})
        try:
            native_results = same_or_run(native)
        except InputError:  # the array does not compute the vector unit's format
            native_results = None
    return Comparison(results, simulator.plan, baseline, baseline_results, fp16_results, native_results)
