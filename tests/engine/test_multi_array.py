"""Chips with several arrays (cores x arrays per core): the split rule, shared bandwidth, one vector
unit per core, and the public-number presets."""

import functools
import math

import pytest

from simulator.engine import Simulator, simulate
from simulator.engine.array_split import Split, best_split, candidates
from simulator.engine.timing import gemm_cycles
from simulator.spec.hardware import Hardware, load_hardware
from simulator.spec.run_config import load_run_config
from workloads.builder import OpBuilder
from workloads.errors import InputError
from workloads.models import Workload, load_model
from workloads.ops import Op

INT8 = load_run_config("configs/int8.yaml")


def chip(cores: int = 1, count: int = 1, **changes) -> Hardware:
    data = load_hardware("rapid_like").model_dump()
    data["cores"] = cores
    data["array"]["count"] = count
    data["sfu"]["fusion"] = False
    for key, value in changes.items():
        section, field = key.split("__")
        data[section][field] = value
    return Hardware.model_validate(data)


def one_op(m: int, k: int, n: int, batch: int = 1, kind: str = "gemm"):
    b = OpBuilder()
    b.input("x", batch * m * k)
    if kind == "gemm":
        b.gemm("op", 0, "ffn1", "ffn", m, k, n, bias=False)
    else:
        b.input("y", batch * k * n)
        b.bmm("op", 0, "bmm_qk", "attention", batch, m, k, n, reads=("x", "y"))
    return b.build_trace("one", {"batch": 1})


def array_row(results):
    return results[results.unit == "array"].iloc[0]


def test_the_split_is_the_partition_whose_busiest_array_finishes_first():
    hw = chip()
    a = hw.array

    def cycles(split: Split) -> int:
        return gemm_cycles(split.m, 768, split.n, a.rows, a.cols, a.dataflow, batch=split.batch, pack=8).compute_cycles

    decode = Op("q", 0, "q", "attention", "gemm", batch=1, m=1, k=768, n=3072)
    assert [s.kind for s in candidates(decode, 4)] == ["n"]  # one row: only the columns can be dealt out
    assert best_split(decode, 4, cycles) == Split("n", 4, 1, 1, 768)
    heads = Op("qk", 0, "bmm_qk", "attention", "bmm", batch=12, m=384, k=64, n=384)
    options = candidates(heads, 4)
    assert [s.kind for s in options] == ["products", "n", "m"]
    chosen = best_split(heads, 4, cycles)
    assert cycles(chosen) == min(cycles(s) for s in options)
    assert Split("n", 3, 1, 8, 3).label == "n/3" and Split("none", 1, 1, 8, 8).label == ""
    assert candidates(Op("t", 0, "q", "attention", "gemm", batch=1, m=1, k=8, n=1), 4) == [Split("none", 1, 1, 1, 1)]


def _logged(cycles: dict[Split, int], evaluated: list[Split], split: Split) -> int:
    evaluated.append(split)
    return cycles[split]


def test_a_lower_bound_spares_partitions_that_cannot_finish_first_and_never_changes_the_choice():
    """The engine bounds a split's finish (compute plus stall) by its compute, to skip the traffic of a split
    that cannot win: with any true lower bound, the choice is the one without it, ties going to the first;
    a split is evaluated only when its bound is below the best finish so far."""
    import random

    rng = random.Random(7)
    for _ in range(300):
        arrays = rng.choice([2, 3, 4])
        op = Op("o", 0, "ffn1", "ffn", "bmm", batch=rng.randint(1, 9), m=rng.randint(1, 9), k=8, n=rng.randint(1, 9))
        options = candidates(op, arrays)
        finish = {split: rng.randint(1, 6) for split in options}  # ties are common
        bound = {split: max(0, finish[split] - rng.randint(0, 3)) for split in options}
        evaluated: list[Split] = []
        cycles = functools.partial(_logged, finish, evaluated)
        chosen = best_split(op, arrays, cycles, bound.__getitem__)
        first_fastest = next(split for split in options if finish[split] == min(finish.values()))
        assert chosen == first_fastest == best_split(op, arrays, finish.__getitem__)
        for index, split in enumerate(evaluated[1:], 1):
            assert bound[split] < min(finish[s] for s in evaluated[:index])
    square = Op("o", 0, "ffn1", "ffn", "bmm", batch=4, m=4, k=8, n=4)
    evaluated = []
    best_split(square, 4, functools.partial(_logged, dict.fromkeys(candidates(square, 4), 10), evaluated),
               lambda split: 10)
    assert evaluated == candidates(square, 4)[:1]  # none can beat the first: only it is evaluated


def test_every_partition_deals_out_its_dimension():
    def op(batch, m, n):
        return Op("o", 0, "ffn1", "ffn", "bmm" if batch > 1 else "gemm", batch=batch, m=m, k=8, n=n)

    assert candidates(op(2, 1, 1), 2) == [Split("products", 2, 1, 1, 1)]
    assert candidates(op(1, 1, 2), 2) == [Split("n", 2, 1, 1, 1)]
    assert candidates(op(1, 7, 1), 2) == [Split("m", 2, 1, 4, 1)]
    assert candidates(op(5, 9, 10), 4) == [Split("products", 3, 2, 9, 10), Split("n", 4, 5, 9, 3),
                                          Split("m", 3, 5, 3, 10)]  # 10 columns: 3 per array on 4 arrays
    assert candidates(op(3, 9, 10), 1) == [Split("none", 1, 3, 9, 10)]


def test_one_array_reports_no_split_and_two_halve_a_tall_narrow_gemm():
    m, k, n = 4096, 64, 8  # fewer columns than the array has: dealing out rows is what helps
    one = array_row(simulate(one_op(m, k, n), chip(), INT8))
    two = array_row(simulate(one_op(m, k, n), chip(cores=2), INT8))
    assert one["array_split"] == "" and two["array_split"] == "m/2"
    a = chip().array
    assert two["compute_cycles"] == gemm_cycles(m // 2, k, n, a.rows, a.cols, a.dataflow, pack=8).compute_cycles
    assert (simulate(load_model("gpt2").trace(), chip(), INT8)["array_split"] == "").all()


def test_a_wide_gemm_on_four_arrays_takes_one_quarter_of_its_columns():
    m, k, n = 384, 768, 3072
    hw = chip(cores=4)
    row = array_row(simulate(one_op(m, k, n), hw, INT8))
    a = hw.array
    quarter = gemm_cycles(m, k, n // 4, a.rows, a.cols, a.dataflow, pack=8).compute_cycles
    products_or_rows = gemm_cycles(-(-m // 4), k, n, a.rows, a.cols, a.dataflow, pack=8).compute_cycles
    assert row["compute_cycles"] == min(quarter, products_or_rows)
    assert row["macs"] == m * k * n  # every MAC counted once
    assert row["utilization"] == pytest.approx(m * k * n / (row["compute_cycles"] * hw.pes * 8))
    assert hw.pes == 4 * a.rows * a.cols


def test_arrays_per_core_and_cores_split_alike_but_cores_bring_vector_units():
    trace = load_model("bert-base").trace(Workload(tokens=128))
    by_cores = simulate(trace, chip(cores=4), INT8)
    by_arrays = simulate(trace, chip(count=4), INT8)
    one = simulate(trace, chip(), INT8)
    arrays = by_cores.unit == "array"
    assert (by_cores[arrays]["compute_cycles"] == by_arrays[arrays]["compute_cycles"]).all()
    sfu = by_cores[~arrays]
    lanes, costs = load_hardware("rapid_like").sfu.lanes, load_hardware("rapid_like").sfu.cycles_per_element
    expected = [math.ceil(e * costs[r] / (4 * lanes)) if e else 0 for e, r in zip(sfu["elements"], sfu["role"],
                                                                                   strict=True)]
    assert list(sfu["compute_cycles"]) == expected
    assert (by_arrays[~arrays]["compute_cycles"] == one[~arrays]["compute_cycles"]).all()  # one vector unit
    assert by_cores.totals["total_cycles"] < by_arrays.totals["total_cycles"] < one.totals["total_cycles"]


def test_dram_bandwidth_is_shared_transfers_do_not_change_with_the_arrays():
    trace = load_model("gpt2").trace(Workload(tokens=256, phase="decode"))
    one, four = simulate(trace, chip(), INT8), simulate(trace, chip(cores=4), INT8)
    for column in ("dram_read_bytes", "dram_write_bytes", "transfer_cycles"):
        assert (one[column] == four[column]).all(), column
    assert four.totals["total_cycles"] >= four.totals["dram_cycles"]


@pytest.mark.parametrize(("model", "tokens"), [("gpt2", 1024), ("opt-1.3b", 2048)])
def test_a_tile_fetched_once_feeds_every_array_of_the_chip(model, tokens):
    """Issue 30.5: the arrays share the chip's buffers, so a prefill moves the same DRAM bytes on
    tpu_v5e_like's four MXUs as on one (before: +47% and +18%, a row-split product re-fetching its
    weights once per array)."""
    tpu = load_hardware("tpu_v5e_like")
    one = Hardware.model_validate({**tpu.model_dump(), "array": {**tpu.array.model_dump(), "count": 1}})
    trace = load_model(model).trace(Workload(tokens=tokens))
    assert simulate(trace, tpu, INT8).totals["dram_bytes"] == simulate(trace, one, INT8).totals["dram_bytes"]


@pytest.mark.parametrize("shape", [(1024, 512, 512), (64, 2048, 4096), (4096, 256, 128), (300, 700, 900)])
def test_dram_bytes_never_grow_with_the_arrays(shape):
    """With buffers too small for either operand, each array's share needs no more sweeps than one
    array's whole product, and what a sweep fetches feeds every array."""
    small = {"memory__ifmap_buffer_bytes": 32768, "memory__filter_buffer_bytes": 16384}
    one = array_row(simulate(one_op(*shape), chip(**small), INT8))
    for arrays in (2, 4, 8):
        many = array_row(simulate(one_op(*shape), chip(cores=arrays, **small), INT8))
        assert many["dram_read_bytes"] <= one["dram_read_bytes"], (arrays, many["array_split"])


def test_the_operand_a_split_does_not_partition_is_read_by_every_array():
    m, k, n = 64, 512, 2048
    hw = chip(cores=4)
    row = array_row(simulate(one_op(m, k, n), hw, INT8))
    assert row["array_split"] in ("n/4", "m/4")
    a_bytes, b_bytes = m * k, k * n + n * 2  # int8, and a 16-bit scale per output channel
    col_tiles = {"n/4": -(-(n // 4) // hw.array.cols), "m/4": -(-n // hw.array.cols)}[row["array_split"]]
    if row["array_split"] == "n/4":  # ws: each array streams all of A once per column tile of its quarter
        assert row["ifmap_read_bytes"] == 4 * a_bytes * col_tiles
        assert row["filter_read_bytes"] == b_bytes
    else:
        assert row["ifmap_read_bytes"] == a_bytes * col_tiles
        assert row["filter_read_bytes"] == 4 * b_bytes
    assert row["ofmap_write_bytes"] == row["ofmap_read_bytes"]


def test_settings_that_model_one_array_are_refused_on_several():
    with pytest.raises(InputError, match="one array"):
        Simulator(chip(cores=2), INT8, timing="scalesim")


def masked_config(tmp_path, sparsity: str):
    config = tmp_path / "masked.yaml"
    config.write_text(f"name: masked\nhardware: rapid_like\nprecision: {{default: int8}}\n"
                      f"sparsity: {{weights: {{{sparsity}, seed: 0, roles: [q, ffn1]}}}}\n")
    return load_run_config(config)


@pytest.mark.parametrize("cores", [2, 4])
def test_n_m_masks_on_several_arrays_time_as_the_closed_form_does(tmp_path, cores):
    """Every column of a 2:4 mask keeps K/2 weights, so the masked shares of every split time as the
    structured closed form's: the busiest array and the chosen split agree op by op."""
    from simulator.spec.weight_masks import weight_masks

    trace = load_model("bert-base").trace(Workload(tokens=64))
    closed = simulate(trace, chip(cores=cores), masked_config(tmp_path, "pattern: '2:4'"))
    policy = masked_config(tmp_path, "pattern: '2:4', through_masks: true")
    masked = simulate(trace, chip(cores=cores), policy, mask_for=weight_masks(policy))
    columns = ["name", "array_split", "compute_cycles", "folds", "macs", "total_cycles", "dram_bytes"]
    assert (masked[columns] == closed[columns]).all().all()
    assert (masked[masked.role == "q"].array_split != "").all()


def test_an_unstructured_mask_on_several_arrays_takes_its_busiest_share(tmp_path):
    from simulator.engine.masks import masked_cycles_reference
    from simulator.spec.weight_masks import weight_masks

    policy = masked_config(tmp_path, "density: 0.3")
    masks, hw = weight_masks(policy), chip(cores=4)
    m, k, n = 384, 768, 3072
    row = array_row(simulate(one_op(m, k, n), hw, policy, mask_for=masks))
    mask, a = masks(Op("op", 0, "ffn1", "ffn", "gemm", batch=1, m=m, k=k, n=n)), hw.array
    shares = {"n": max(masked_cycles_reference(mask[:, start:start + n // 4], m, a.rows, a.cols, a.dataflow, pack=8)
                       for start in range(0, n, n // 4)),
              "m": masked_cycles_reference(mask, m // 4, a.rows, a.cols, a.dataflow, pack=8)}
    kind = row["array_split"].split("/")[0]
    assert row["array_split"] in ("n/4", "m/4") and shares[kind][0] == row["compute_cycles"]
    assert row["macs"] == m * mask.sum()  # every kept MAC once, whichever split
    assert row["compute_cycles"] == min(cycles for cycles, _, _ in shares.values())


@pytest.mark.parametrize(("preset", "bf16_tflops", "int8_tops", "gbytes_per_s", "arrays"), [
    ("tpu_v5e_like", 197, 393, 819, 4),
])
def test_public_preset_peaks_match_the_published_figures(preset, bf16_tflops, int8_tops, gbytes_per_s, arrays):
    hw = load_hardware(preset)
    clock = hw.array.clock_mhz * 1e6
    assert hw.arrays == arrays
    assert 2 * hw.pes * hw.macs_per_pe["bf16"] * clock / 1e12 == pytest.approx(bf16_tflops, rel=0.002)
    assert 2 * hw.pes * hw.macs_per_pe["int8"] * clock / 1e12 == pytest.approx(int8_tops, rel=0.01)
    assert hw.memory.dram_bytes_per_cycle * clock / 1e9 == pytest.approx(gbytes_per_s, rel=0.001)


def test_the_four_core_rapid_chip_is_four_calibrated_cores():
    core, four = load_hardware("rapid_like"), load_hardware("rapid_like_4core")
    assert four.cores == 4 and four.array == core.array and four.macs_per_pe == core.macs_per_pe
    assert four.sfu == core.sfu
    int4_tops = 2 * four.pes * four.macs_per_pe["int4"] * four.array.clock_mhz * 1e6 / 1e12
    assert int4_tops == pytest.approx(102.4, rel=0.03)  # two operations per MAC
    trace = load_model("bert-base").trace()
    one, chip4 = simulate(trace, core, INT8), simulate(trace, four, INT8)
    assert 3 < one.totals["total_cycles"] / chip4.totals["total_cycles"] <= 4


def test_each_mask_is_read_once_and_timed_as_the_run_asks(tmp_path):
    """The engine keeps each mask's column counts, so a provider (a checkpoint streaming its tensors) is
    asked once per op; one array under --timing scalesim times the masks as SCALE-Sim runs folds."""
    from simulator.engine.masks import masked_cycles
    from simulator.spec.weight_masks import weight_masks

    policy = masked_config(tmp_path, "density: 0.4")
    provider = weight_masks(policy)
    asked: list[str] = []

    def counting(op):
        asked.append(op.name)
        return provider(op)

    trace = load_model("bert-base").trace(Workload(tokens=32))
    hw = chip()
    results = simulate(trace, hw, policy, mask_for=counting, timing="scalesim")
    masked = results[results.role.isin(["q", "ffn1"]) & (results.unit == "array")]
    assert sorted(asked) == sorted(masked.name) and len(asked) == len(set(asked)) == 24
    for row in masked.itertuples():
        op = next(op for op in trace if op.name == row.name)
        a = hw.array
        assert row.compute_cycles == masked_cycles(provider(op), op.m, a.rows, a.cols, a.dataflow, pack=8,
                                                   timing="scalesim")[0]
