"""accelsim's Python API.

    from simulator import Workload, footprint, load_hardware, load_model, load_run_config, simulate

    trace = load_model("bert-base").trace(Workload(batch=1, tokens=384))   # the whole model
    results = simulate(trace, load_hardware("rapid_like"), load_run_config("int8_sp"))
    results.totals["latency_ms"]                       # one row per op in `results`

Names are imported on first use, so that ``import simulator`` (and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

from simulator.lazy import lazy_exports

_EXPORTS = {
    "load_model": "workloads.models",
    "Workload": "workloads.models",
    "load_hardware": "simulator.spec.hardware",
    "Hardware": "simulator.spec.hardware",
    "load_target": "simulator.spec.system",
    "System": "simulator.spec.system",
    "Target": "simulator.spec.system",
    "load_run_config": "simulator.spec.run_config",
    "policy_from_dict": "simulator.spec.run_config",
    "simulate": "simulator.engine",
    "Simulator": "simulator.engine",
    "generate": "simulator.analysis.generation",
    "generation_summary": "simulator.analysis.generation",
    "Results": "simulator.engine",
    "footprint": "simulator.plan.binding",
    "bind": "simulator.plan.binding",
    "Plan": "simulator.plan.binding",
    "gemm_cycles": "simulator.engine.timing",
    "ServingRunner": "simulator.serving.session",
    "ServeSettings": "simulator.serving.server",
    "generate_requests": "simulator.serving.requests",
    "parse_lengths": "simulator.serving.requests",
    "InputError": "workloads.errors",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, list(globals()))
