"""Loading the paper reproduction's inputs: its workloads (configs/reproduce.yaml) and the published
figures (reference/paper_targets.yaml), which only ever fill the "paper" column of reports."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from simulator.spec.config_io import StrictModel, read_yaml_mapping, reject_unknown_keys, validate
from simulator.spec.run_config import Policy, load_run_config
from simulator.spec.shipped import CONFIG_DIR, REFERENCE_DIR
from simulator.spec.workload_knobs import WorkloadKnobs
from workloads.errors import InputError
from workloads.models import Workload, load_model
from workloads.ops import Trace

SETUP_PATH = CONFIG_DIR / "reproduce.yaml"
TARGETS_PATH = REFERENCE_DIR / "paper_targets.yaml"
TOLERANCES_PATH = REFERENCE_DIR / "tolerances.yaml"
FIGURE_SECTIONS = ("memory_capacity_savings", "pruned_layer_share_of_execution_time", "sparse_over_dense_speedup",
                   "fp16_dense_over_dense_time_mean")


class ReproductionSetup(StrictModel):
    hardware: str
    include_frontend: bool = False
    include_head: bool = False
    models: dict[str, WorkloadKnobs]
    configs: list[str]


def load_setup(path: Path = SETUP_PATH) -> ReproductionSetup:
    return validate(ReproductionSetup, read_yaml_mapping(path), str(path))


def model_trace(model: str, workload: Workload, traced: bool = False) -> Trace:
    """The closed-form trace, or (``traced``) the real transformers model traced on the meta device."""
    spec = load_model(model)
    if not traced:
        return spec.trace(workload)
    from workloads.hf_trace import trace_hf

    return trace_hf(spec, spec.resolve(workload))


def scope(trace: Trace, include_frontend: bool = True, include_head: bool = True) -> Trace:
    """The trace without its frontend and/or task head (the paper's figures cover the backbone)."""
    present = {op.group for op in trace}
    excluded = [group for group, keep in (("frontend", include_frontend), ("head", include_head))
                if not keep and group in present]
    if not excluded:
        return trace
    selected = trace.select(exclude=excluded)
    return dataclasses.replace(selected, workload={**trace.workload, "excluded": "+".join(excluded)})


def backbone_trace(model: str, knobs: WorkloadKnobs, include_frontend: bool = False,
                   include_head: bool = False, traced: bool = False) -> Trace:
    """The trace for a YAML file's workload knobs; by default the backbone, as the paper's figures."""
    return scope(model_trace(model, knobs.workload(), traced), include_frontend, include_head)


def setup_traces(setup: ReproductionSetup, overrides: dict[str, WorkloadKnobs] | None = None) -> dict[str, Trace]:
    knobs = {**setup.models, **(overrides or {})}
    return {model: backbone_trace(model, knobs[model], setup.include_frontend, setup.include_head)
            for model in setup.models}


def setup_policies(setup: ReproductionSetup, config_dir: Path = CONFIG_DIR) -> dict[str, Policy]:
    return {name: load_run_config(config_dir / f"{name}.yaml") for name in setup.configs}


class Tolerance(StrictModel):
    kind: Literal["abs", "rel"]
    tolerance: float = Field(gt=0)
    role: Literal["fitted", "predicted", "identity"] = Field(
        description="fitted by the calibration, predicted (never fitted), or identity (storage arithmetic)")

    def describe(self) -> str:
        return f"{self.tolerance:g}" if self.kind == "abs" else f"{100 * self.tolerance:g}%"

    def error(self, paper: float, value: float) -> float:
        """|error| in units of this tolerance (1.0 = at the limit)."""
        error = value - paper if self.kind == "abs" else value / paper - 1
        return abs(error) / self.tolerance


def load_tolerances(path: Path = TOLERANCES_PATH) -> dict[str, Tolerance]:
    """Tolerance per figure section of paper_targets.yaml."""
    data = read_yaml_mapping(path)
    try:
        reject_unknown_keys(data, FIGURE_SECTIONS, "figure section")
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    return {section: validate(Tolerance, data.get(section, {}), f"{path}: {section}") for section in FIGURE_SECTIONS}


def load_paper_targets(path: Path = TARGETS_PATH) -> dict[str, float]:
    """The published figures as {dotted key: value}, e.g. 'sparse_over_dense_speedup.int8.bert-base'."""
    data = read_yaml_mapping(path)
    targets: dict[str, float] = {}

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}", value)
        elif isinstance(node, int | float) and not isinstance(node, bool):
            targets[prefix] = float(node)
        else:
            raise InputError(f"{path}: {prefix}: expected a number, got {node!r}")

    for section in FIGURE_SECTIONS:
        if section not in data:
            raise InputError(f"{path}: missing section {section!r}")
        walk(section, data[section])
    return targets


def figure_rows(targets: dict[str, float], figures: dict[str, float], tolerances: dict[str, Tolerance],
                ) -> list[dict[str, Any]]:
    """One row per published figure: paper, accelsim, errors, the tolerance and the figure's role."""
    rows = []
    for key, paper in targets.items():
        tolerance = tolerances[key.split(".")[0]]
        value = figures[key]
        error = tolerance.error(paper, value)
        rows.append({"key": key, "role": tolerance.role, "paper": paper, "accelsim": value,
                     "rel_error": value / paper - 1, "tolerance": tolerance.describe(),
                     "tolerance_kind": tolerance.kind, "error_in_tolerances": error, "within_tolerance": error <= 1.0})
    return rows
