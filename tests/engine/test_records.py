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


def test_a_step_record_takes_each_value_into_its_own_column():
    """The engine builds a record positionally (in the columns' order, for speed): every input with a value of
    its own must land in the column named for it."""
    from simulator.engine.kernel_costs import KernelColumns
    from simulator.engine.simulator import _record
    from simulator.engine.steps import Step
    from simulator.formats.precision import parse_precision
    from simulator.formats.storage import OpStorage
    from workloads.ops import Op
    from workloads.vocabulary import category

    counts = {name: 1000 + i for i, name in enumerate(ACCESS_COLUMNS)}
    cost = Cost(compute_cycles=11, dense_compute_cycles=12, folds=13, macs=14, transfer_cycles=15, stall_cycles=16,
                utilization=0.25, **counts)
    op = Op("o", 3, "attn_qk", "attention", "bmm", batch=21, m=22, k=23, n=24, elements=25)
    storage = OpStorage("o", 3, "attn_qk", "attention", 1, 1, "int8", "int8", value_bits=31, index_bits=32,
                        scale_bits=33, bias_bits=34, dense_weight_bits=35, sparse="dense")
    step = Step(op, "sfu", True, parse_precision("int8"), (), ())
    kernel = KernelColumns(41, "fused", 42, 43, 44, 45)
    record = _record(step, cost, storage, "p", "cp", 51, "2:4", "home", "rows", True, kernel)
    expected = {"name": "o", "layer": 3, "role": "attn_qk", "group": "attention", "kind": "bmm", "unit": "sfu",
                "inserted": True, "precision": "p", "compute_precision": "cp", "macs_per_pe": 51, "sparsity": "2:4",
                "dequantized": True, "batch": 21, "m": 22, "k": 23, "n": 24, "elements": 41, "macs": 14, "folds": 13,
                "array_split": "rows", "compute_cycles": 11, "dense_compute_cycles": 12, "transfer_cycles": 15,
                "stall_cycles": 16, "total_cycles": 27, "launch_cycles": 0, "utilization": 0.25, "weight_bits": 63,
                "index_bits": 32, "scale_bits": 33, "bias_bits": 34, "dram_bytes": 2001, **counts,
                "residency": "home", "bound": "memory", "fused_into": "", "kernel": "fused", "block_q": 42,
                "block_k": 43, "key_chunks": 44, "closed_form_dram_bytes": 45}
    assert {name: getattr(record, name) for name in expected} == expected
    assert record.category == category("attn_qk", "sfu")
    inserted = _record(Step(op, "link", True, parse_precision("int8"), (), ()), cost, None, "p", "cp", 1, "dense",
                       "", "", False, kernel)
    assert (inserted.elements, inserted.weight_bits, inserted.index_bits, inserted.scale_bits,
            inserted.bias_bits) == (25, 0, 0, 0, 0)
    for transfer, bound in ((10, "compute"), (11, "compute"), (12, "memory")):  # against 11 compute cycles
        on_array = _record(Step(op, "array", False, parse_precision("int8"), (), ()),
                           Cost(compute_cycles=11, transfer_cycles=transfer), None, "p", "cp", 1, "dense", "", "",
                           False, kernel)
        assert (on_array.elements, on_array.bound) == (0, bound)  # an array step's elements are not counted
