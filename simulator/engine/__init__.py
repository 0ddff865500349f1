"""The engine: a trace, a hardware and a run config in; per-step cycles, traffic and action counts out.

Read in pipeline order: ``lowering`` (ops to steps), ``fusion``, ``residency`` (where tensors live),
``timing`` and ``array_split`` (the array), ``costs`` (the counts of one step, a
``records.StepRecord``), ``grouping`` (sample groups and the capacity check), ``results`` (the frame and
totals); ``simulator`` drives them. Names are imported on first use, so that the leaf modules
(``timing``) import without the whole engine.
"""

from __future__ import annotations

from simulator.lazy import lazy_exports

_EXPORTS = {
    "RESULT_COLUMNS": "simulator.engine.records",
    "StepRecord": "simulator.engine.records",
    "Results": "simulator.engine.results",
    "category": "workloads.vocabulary",
    "summarize_results": "simulator.engine.results",
    "Prepared": "simulator.engine.steps",
    "Simulator": "simulator.engine.simulator",
    "simulate": "simulator.engine.simulator",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, list(globals()))
