"""A run next to what it is compared with: its config's dense baseline, dense FP16 and the chip's own dense
format (its vector unit's: fp16 or bf16) on the same chip."""

from __future__ import annotations

from dataclasses import dataclass

from simulator.engine import Results, Simulator
from simulator.plan.binding import Plan
from simulator.spec.run_config import Policy, policy_from_dict
from workloads.errors import InputError
from workloads.ops import Trace


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
    with the same timing, accounting and attention kernel; a comparison config that simulates the same as
    the run (or as another comparison) is not run again."""
    results = simulator.run(trace)
    hardware, policy = simulator.hardware, simulator.policy

    native = hardware.sfu_precision.name  # a "native" format is this one here
    done: list[tuple[Policy, Results]] = [(policy, results)]
    failed: list[Policy] = []

    def same_or_run(other: Policy) -> Results:
        """``other``'s results: those of a run already made that simulates the same here, or a new dense run
        (comparisons are dense: no weight masks)."""
        other = other.running_attention_as(policy)
        for ran, its_results in done:
            if other.config.same_simulation(ran.config, native):
                return its_results
        other_results = Simulator(hardware, other, timing=simulator.timing, accounting=simulator.accounting).run(trace)
        done.append((other, other_results))
        return other_results

    def compared(other: Policy, what: str) -> Results | None:
        """``other``'s results, or None with a note when it cannot run here (it does not fit the chip's
        DRAM, or the array lacks its format): a comparison never stops the run it is compared with."""
        other = other.running_attention_as(policy)
        if any(other.config.same_simulation(tried.config, native) for tried in failed):
            return None  # the same simulation already could not run, and its note says why
        try:
            return same_or_run(other)
        except InputError as exc:
            failed.append(other)
            results.notes.append(f"no comparison with {what}: {exc}")
            return None

    baseline_results = compared(baseline, f"the baseline {baseline.name}") if baseline is not None else None
    fp16 = policy_from_dict({"name": "fp16_dense", "hardware": hardware.name, "precision": {"default": "fp16"}})
    try:
        fp16_results: Results | None = same_or_run(fp16)
    except InputError:  # no float path on this chip, or it does not fit: "n/a"
        fp16_results = None
    dense_native = policy_from_dict({"name": "native_dense", "hardware": hardware.name,
                                     "precision": {"default": "native"}})
    if dense_native.running_attention_as(policy).config.same_simulation(
            fp16.running_attention_as(policy).config, native):  # an fp16 chip: that comparison, n/a or not
        native_results: Results | None = fp16_results
    else:
        native_results = compared(dense_native, f"dense {native} (the chip's native format)")
    return Comparison(results, simulator.plan, baseline, baseline_results, fp16_results, native_results)
