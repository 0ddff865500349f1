"""The paper's hardware figures, computed by the simulator (pure; the published values live in
reference/paper_targets.yaml and are only ever compared against, never used here).

Figure keys are dotted paths into paper_targets.yaml:

- ``memory_capacity_savings.<a>_vs_<b>``: storage of the pruned linear layers' weights, dense
  reference over compressed (scale factors excluded);
- ``pruned_layer_share_of_execution_time.<p>.<model>``: time in the per-block linear layers over
  the whole dense run at precision p;
- ``sparse_over_dense_speedup.<p>.<model>``: dense time over 2:4-sparse time at precision p;
- ``fp16_dense_over_dense_time_mean.<p>``: dense FP16 time over dense time at p, averaged over models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simulator.engine import Results, simulate
from simulator.plan.binding import bind
from simulator.spec.hardware import Hardware
from simulator.spec.run_config import Policy
from workloads.ops import Trace

TIMED_CONFIGS = ("fp16", "int8", "int8_sp", "int4", "int4_sp")
MEMORY_FIGURES = {  # figure -> (config, ratio of its pruned-linear storage)
    "int8_sparse_vs_int8_dense": ("int8_sp", "compression_vs_dense"),
    "int4_sparse_vs_int4_dense": ("int4_sp", "compression_vs_dense"),
    "int8_sparse_vs_fp32_dense": ("int8_sp", "compression_vs_fp32"),
    "int4_sparse_vs_fp32_dense": ("int4_sp", "compression_vs_fp32"),
}


@dataclass(frozen=True)
class Reproduction:
    figures: dict[str, float]
    runs: dict[tuple[str, str], Results]  # (model, config) -> per-op results
    memory: dict[tuple[str, str], dict[str, Any]]  # (model, config) -> footprint summary


def linear_share(results: Results) -> float:
    linear = results.loc[results["category"] == "linear", "total_cycles"].sum()
    return float(linear) / float(results.totals["total_cycles"])


def reproduce_figures(traces: dict[str, Trace], hardware: Hardware, policies: dict[str, Policy],
                      memory_model: str | None = None) -> Reproduction:
    """Every figure for ``traces`` (model -> backbone trace) under ``policies`` (config name -> policy).

    Memory figures are the same for every model whose K is a multiple of 4; they are taken from
    ``memory_model`` (default: the first model).
    """
    runs = {(model, name): simulate(trace, hardware, policies[name])
            for model, trace in traces.items() for name in TIMED_CONFIGS}
    memory = {(model, name): bind(policies[name], hardware).footprint(trace).as_dict()
              for model, trace in traces.items() for name in ("int8_sp", "int4_sp")}
    figures: dict[str, float] = {}
    first = memory_model or next(iter(traces))
    for figure, (name, ratio) in MEMORY_FIGURES.items():
        figures[f"memory_capacity_savings.{figure}"] = memory[(first, name)]["pruned_linear"][ratio]
    for precision in ("int8", "int4"):
        for model in traces:
            figures[f"pruned_layer_share_of_execution_time.{precision}.{model}"] = linear_share(
                runs[(model, precision)])
    for precision in ("int8", "int4"):
        for model in traces:
            dense = runs[(model, precision)].totals["total_cycles"]
            sparse = runs[(model, f"{precision}_sp")].totals["total_cycles"]
            figures[f"sparse_over_dense_speedup.{precision}.{model}"] = dense / sparse
    for precision in ("int8", "int4"):
        ratios = [runs[(model, "fp16")].totals["total_cycles"] / runs[(model, precision)].totals["total_cycles"]
                  for model in traces]
        figures[f"fp16_dense_over_dense_time_mean.{precision}"] = sum(ratios) / len(ratios)
    return Reproduction(figures, runs, memory)
