"""The knob table (workloads/knobs.py) is the one list of workload knobs: the Workload dataclass, the CLI's
options, the YAML schema of model entries and the sweep's axes and columns all agree with it."""

from __future__ import annotations

from dataclasses import fields

import click
import pytest
from pydantic import ValidationError

from simulator.analysis.sweep import INTEGER_COLUMNS, MODEL_COLUMNS
from simulator.analysis.sweep_axes import WORKLOAD_AXES
from simulator.cli.main import cli
from simulator.spec.workload_knobs import WorkloadKnobs
from workloads.knobs import KNOB_NAMES, KNOBS
from workloads.models import Workload
from workloads.ops import MAX_SIZE

# generate() sets logits_to_keep; the parallel plan (--tp, --ep, --pp) the rest
SET_BY_THE_SIMULATOR = {"logits_to_keep", "tp", "ep", "pp", "stage"}


def test_every_workload_field_a_user_sets_is_a_knob():
    assert set(KNOB_NAMES) == {f.name for f in fields(Workload)} - SET_BY_THE_SIMULATOR


@pytest.mark.parametrize("command", ["run", "extract"])
def test_trace_commands_take_every_knob_as_an_option(command):
    options = {param.name: param for param in cli.commands[command].params if isinstance(param, click.Option)}
    for knob in KNOBS:
        assert knob.flag in options[knob.name].opts
        assert options[knob.name].default == knob.default
        if knob.choices:
            assert tuple(options[knob.name].type.choices) == knob.choices


def test_yaml_schema_has_the_cli_limits():
    assert tuple(WorkloadKnobs.model_fields) == KNOB_NAMES
    assert WorkloadKnobs().workload() == Workload()
    for knob in (k for k in KNOBS if k.kind is int):
        WorkloadKnobs(**{knob.name: MAX_SIZE})
        for bad in (0, MAX_SIZE + 1):
            with pytest.raises(ValidationError):
                WorkloadKnobs(**{knob.name: bad})
    with pytest.raises(ValidationError):
        WorkloadKnobs(phase="training")
    with pytest.raises(ValidationError):
        WorkloadKnobs(expert_imbalance=0.5)


def test_sweep_columns_and_axes_follow_the_table():
    assert ("model", *KNOB_NAMES, "new_tokens") == MODEL_COLUMNS
    assert set(WORKLOAD_AXES) == {k.name for k in KNOBS if k.axis} | {"new_tokens"}
    assert {k.name for k in KNOBS if k.kind is int} <= set(INTEGER_COLUMNS)
