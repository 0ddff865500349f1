"""Numbers that are right outside the paper's path: utilization, printed percentages, totals that follow
the rows, one scope default for the API and every command."""

import json

import numpy as np
import pytest
from cli_helpers import accelsim
from conftest import preset_with
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.engine import simulate
from simulator.engine.mapping import DATAFLOWS
from simulator.engine.timing import gemm_cycles
from simulator.report.summary import percent
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import load_run_config, policy_from_dict
from workloads.models import Workload, load_model


@settings(max_examples=200, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(1, 40), n=st.integers(1, 40), rows=st.integers(1, 8),
       cols=st.integers(1, 8), dataflow=st.sampled_from(DATAFLOWS), timing=st.sampled_from(["default", "scalesim"]),
       batch=st.integers(1, 3))
def test_utilization_is_a_fraction_of_a_cycle_count(m, k, n, rows, cols, dataflow, timing, batch):
    result = gemm_cycles(m, k, n, rows, cols, dataflow, timing=timing, batch=batch)
    assert 0 < result.utilization(rows, cols) <= 1
    # scalesim reports each product's last cycle index; the count is one more per product
    assert result.busy_cycles == result.compute_cycles + (batch if timing == "scalesim" else 0)


def test_issue_example_utilization_of_one_mac_per_cycle():
    out = json.loads(accelsim("gemm", "--m", "4", "--k", "5", "--n", "3", "--rows", "1", "--cols", "1",
                              "--dataflow", "os", "--timing", "scalesim", "--json").stdout)
    assert (out["compute_cycles"], out["busy_cycles"], out["utilization"]) == (59, 60, 1.0)


@pytest.mark.parametrize(("fraction", "text"), [(0.624, "62.4%"), (0.000123, "0.0123%"), (1.0, "100%"),
                                                (0.0, "0%")])
def test_percentages_keep_their_digits(fraction, text):
    assert percent(fraction) == text


def test_huge_array_utilization_is_not_printed_as_zero():
    trace = load_model("bert-base").trace(Workload(tokens=16))
    huge = preset_with("tpu_v1_like", array={"rows": 4096, "cols": 4096})
    results = simulate(trace, huge, load_run_config("int8"))
    assert 0 < results.totals["utilization"] < 0.001
    assert "0%" not in percent(results.totals["utilization"])


def test_all_zero_masks_give_a_sentence_not_nan(tmp_path):
    trace = load_model("bert-base").trace(Workload(tokens=8))
    zero = {op.name: np.zeros((op.n, op.k), dtype=bool) for op in trace if op.role == "ffn1"}  # out x in
    np.savez(tmp_path / "masks.npz", **zero)
    policy = policy_from_dict({"name": "zero", "hardware": "rapid_like", "precision": {"default": "int8"},
                               "sparsity": {"weights": {"mask": str(tmp_path / "masks.npz"), "roles": ["ffn1"]}}})
    from simulator.spec.mask_files import MaskProvider

    results = simulate(trace, load_hardware("rapid_like"), policy,
                       mask_for=MaskProvider(policy.config.sparsity.weights))
    notes = " ".join(results.notes)
    assert "nan" not in notes and "no weight is kept" in notes


def test_filtered_results_total_their_own_rows():
    results = simulate(load_model("bert-base").trace(), load_hardware("rapid_like"), load_run_config("int8"))
    ffn = results[results.group == "ffn"]
    assert ffn.totals["total_cycles"] == int(ffn["total_cycles"].sum()) < results.totals["total_cycles"]
    assert ffn.totals["macs"] == int(ffn["macs"].sum())


@pytest.mark.parametrize("model", ["bert-base", "wav2vec2-large"])
def test_one_scope_default_for_api_run_and_memory(model):
    """The Python API simulates the trace as built (frontend and default head included); `run` and
    `memory` default to the same whole model and say so."""
    api = simulate(load_model(model).trace(), load_hardware("rapid_like"), load_run_config("int8"))
    run = json.loads(accelsim("run", "int8", "--model", model, "--format", "json").stdout)
    memory = json.loads(accelsim("memory", "int8", "--model", model, "--json").stdout)
    assert run["scope"] == "whole model" and "excluded" not in run["workload"]
    assert run["total_cycles"] == api.totals["total_cycles"]
    assert run["memory"]["total"] == memory["total"]
    backbone = json.loads(accelsim("run", "int8", "--model", model, "--exclude-head", "--format", "json").stdout)
    assert backbone["scope"].startswith("backbone without") and backbone["total_cycles"] < run["total_cycles"]


def test_every_category_has_its_own_colour_and_place():
    from simulator.report.summary import CATEGORY_COLOURS, CATEGORY_ORDER
    from workloads.vocabulary import SFU_OPS

    assert set(CATEGORY_COLOURS) | {"stalls"} == set(CATEGORY_ORDER)
    assert {f"sfu_{op}" for op in SFU_OPS} <= set(CATEGORY_COLOURS)
    assert len(set(CATEGORY_COLOURS.values())) == len(CATEGORY_COLOURS)


FORMATS = ("w4a16_g128", "w4a16_g128_kv4", "w4a16_g128_kv8", "w8a8", "w4a8_g128", "fp8", "mxfp4", "nvfp4")


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_config_is_compared_with_the_chips_own_dense_format(name):
    """Issue 30.9: the format configs had no baseline (speedup n/a)."""
    assert load_run_config(name).config.baseline == "native"


def test_run_compares_with_the_native_format_where_the_chip_has_no_fp16(accelsim_here):
    done = accelsim_here("run", "w8a8", "--model", "bert-base", "--hardware", "tpu_v5e_like", "--format", "json")
    summary = json.loads(done.stdout)
    trace = load_model("bert-base").trace(Workload())
    tpu = load_hardware("tpu_v5e_like")
    native = simulate(trace, tpu, load_run_config("native")).totals["total_cycles"]
    assert summary["speedup_vs_fp16_dense"] is None and summary["native"] == "bf16"
    assert summary["speedup_vs_native_dense"] == pytest.approx(native / summary["total_cycles"])
    assert summary["speedup_vs_baseline"] == summary["speedup_vs_native_dense"]


def test_effective_tops_per_w_counts_the_dense_products():
    """Issue 30.9: TOPS/W counts useful MACs, so sparsity scored lower; the effective figure counts the MACs
    of the products as written (2:4 on six linear layers: their MACs halve, the others stay)."""
    trace = load_model("bert-base").trace(Workload(tokens=128))
    rapid = load_hardware("rapid_like")
    dense, sparse = (simulate(trace, rapid, load_run_config(n)) for n in ("int8", "int8_sp"))
    assert dense.totals["energy"]["effective_tops_per_w"] == pytest.approx(dense.totals["energy"]["tops_per_w"])
    energy = sparse.totals["energy"]
    assert energy["effective_tops_per_w"] == pytest.approx(
        energy["tops_per_w"] * dense.totals["macs"] / sparse.totals["macs"])
    assert energy["effective_tops_per_w"] > dense.totals["energy"]["effective_tops_per_w"]


def test_a_comparison_that_does_not_fit_never_stops_the_run(accelsim_here):
    """The issue's KV8 example: its bf16 baseline needs more DRAM than the chip has; the run still runs,
    faster than the 16-bit cache (30.2), with the comparison n/a and a note saying why."""
    args = ["--model", "llama-2-7b", "--phase", "decode", "--tokens", "2048", "--batch", "8",
            "--hardware", "tpu_v5e_like", "--format", "json"]
    kv8 = json.loads(accelsim_here("run", "w4a16_g128_kv8", *args).stdout)
    plain = json.loads(accelsim_here("run", "w4a16_g128", *args).stdout)
    assert kv8["speedup_vs_baseline"] is None and kv8["speedup_vs_native_dense"] is None
    assert sum("no comparison with the baseline native" in note for note in kv8["notes"]) == 1
    assert kv8["dram_bytes"] < plain["dram_bytes"] and kv8["latency_ms"] < plain["latency_ms"]
