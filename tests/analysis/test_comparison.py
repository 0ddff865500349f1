"""A run and what it is compared with: the same chip, timing, masks and accounting for every comparison;
each comparison run once; one that cannot run is n/a with a note."""

from conftest import preset_with

from simulator.analysis.comparison import compare
from simulator.engine import Simulator
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_baseline, load_run_config, policy_from_dict
from workloads.models import Workload, load_model

TRACE = load_model("bert-base").trace(Workload(tokens=64))


def test_comparisons_run_with_the_runs_timing_and_accounting():
    rapid = load_hardware("rapid_like")
    policy = load_run_config("int8_sp")
    for timing, accounting in (("scalesim", "default"), ("default", "zigzag")):
        sim = Simulator(rapid, policy, timing=timing, accounting=accounting)
        comparison = compare(TRACE, sim, load_baseline(policy))
        assert comparison.baseline is not None and comparison.baseline.name == "int8"
        alone = Simulator(rapid, load_run_config("int8"), timing=timing, accounting=accounting).run(TRACE)
        assert comparison.baseline_results is not None
        assert comparison.baseline_results.totals["total_cycles"] == alone.totals["total_cycles"]
        assert comparison.baseline_results.totals["energy"]["total_pj"] == alone.totals["energy"]["total_pj"]


def test_on_an_fp16_chip_the_native_comparison_is_the_fp16_one():
    rapid = load_hardware("rapid_like")
    comparison = compare(TRACE, Simulator(rapid, load_run_config("w8a8")), load_baseline(load_run_config("w8a8")))
    assert comparison.fp16_results is not None and comparison.native_results is comparison.fp16_results
    assert comparison.baseline_results is comparison.fp16_results  # native: the same simulation, run once
    fp16 = Simulator(rapid, load_run_config("fp16")).run(TRACE)
    assert comparison.fp16_results.totals["total_cycles"] == fp16.totals["total_cycles"]


def test_a_config_without_baseline_and_a_native_run_that_cannot_fit():
    tiny = preset_with("tpu_v5e_like", memory={"dram_capacity_bytes": 200_000_000})  # int8 fits, bf16 does not
    policy = policy_from_dict({"name": "i8", "hardware": "tpu_v5e_like", "precision": {"default": "int8"}})
    comparison = compare(TRACE, Simulator(tiny, policy), None)
    assert comparison.baseline is None and comparison.baseline_results is None
    assert comparison.native_results is None and comparison.fp16_results is None
    notes = [note for note in comparison.results.notes if note.startswith("no comparison with")]
    assert len(notes) == 1 and notes[0].startswith("no comparison with dense bf16 (the chip's native format): ")
