"""The typed step record: its columns are the results' and the costs' own, and its arithmetic adds up."""

from dataclasses import fields

from simulator.engine import simulate
from simulator.engine.costs import Cost
from simulator.engine.records import ACCESS_COLUMNS, ADDITIVE_COLUMNS, RESULT_COLUMNS, SHAPE_COLUMNS
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_run_config
from workloads.models import Workload, load_model


def some_records():
    from simulator.engine import Simulator

    sim = Simulator(load_hardware("rapid_like"), load_run_config("int8_sp"))
    return sim.records(sim.prepare(load_model("bert-base").trace(Workload(tokens=32))))


def test_columns_are_the_frames_and_the_costs():
    res = simulate(load_model("bert-base").trace(Workload(tokens=32)), load_hardware("rapid_like"),
                   load_run_config("int8"))
    assert tuple(res.columns) == RESULT_COLUMNS
    cost_fields = {field.name for field in fields(Cost)}
    assert set(ACCESS_COLUMNS) <= cost_fields and "dram_read_bytes" in ACCESS_COLUMNS
    assert not set(ADDITIVE_COLUMNS) & set(SHAPE_COLUMNS)


def test_scaling_adding_and_summing_records():
    record = next(r for r in some_records() if r.unit == "array" and r.macs)
    tripled = record.scaled(3, record)
    assert all(getattr(tripled, c) == 3 * getattr(record, c) for c in ADDITIVE_COLUMNS)
    assert (tripled.name, tripled.m, tripled.utilization) == (record.name, record.m, record.utilization)
    total = record.zeroed()
    assert all(getattr(total, c) == 0 for c in ADDITIVE_COLUMNS)
    total.add(record)
    total.add(record, times=2)
    assert total.row() == tripled.row()
    assert record.with_sums(tripled).row() == tripled.row()
    copy = record.copy()
    copy.add(record)
    assert copy.macs == 2 * record.macs and record.macs != copy.macs  # a copy, not the same record
    renamed = record.renamed("other", 7, "softmax")
    assert (renamed.name, renamed.layer, renamed.fused_into) == ("other", 7, "softmax")
    others = [i for i, column in enumerate(RESULT_COLUMNS) if column not in ("name", "layer", "fused_into")]
    assert [renamed.row()[i] for i in others] == [record.row()[i] for i in others]


def test_a_count_past_64_bits_is_refused_naming_its_op_and_column():
    """The frame's integer columns are 64-bit: a count that would wrap around is refused, on any such column
    and row; one at the limit is kept as written."""
    import pytest

    from simulator.engine.results import frame
    from workloads.errors import InputError
    from workloads.ops import INT64_MAX

    records = some_records()
    for column in ("dram_bytes", "m", "closed_form_dram_bytes"):
        edited = [record.copy() for record in records]
        setattr(edited[-1], column, INT64_MAX)
        assert frame(edited)[column].iloc[-1] == INT64_MAX
        setattr(edited[-1], column, INT64_MAX + 1)
        with pytest.raises(InputError, match=rf"^op {edited[-1].name}: {column} = {INT64_MAX + 1} exceeds the 64-bit"):
            frame(edited)
    assert frame([]).empty
