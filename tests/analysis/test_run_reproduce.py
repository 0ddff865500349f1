"""accelsim run / reproduce: the paper's figures within tolerance, smoke runs, outputs, bad input."""

import json

import pytest
from cli_helpers import accelsim

from simulator.analysis.paper import load_paper_targets, load_setup, load_tolerances, setup_policies, setup_traces
from simulator.analysis.reproduce import reproduce_figures
from simulator.spec.hardware import load_hardware

TOLERANCES = load_tolerances()  # reference/tolerances.yaml: 0.005 / 0.01 absolute, 2% / 3% relative


@pytest.fixture(scope="module")
def reproduction():
    setup = load_setup()
    return reproduce_figures(setup_traces(setup), load_hardware(setup.hardware), setup_policies(setup))


TARGETS = load_paper_targets()


def test_all_eighteen_figures_present():
    assert len(TARGETS) == 18


@pytest.mark.parametrize("key", sorted(TARGETS))
def test_paper_figure_within_tolerance(reproduction, key):
    paper, ours = TARGETS[key], reproduction.figures[key]
    assert TOLERANCES[key.split(".")[0]].error(paper, ours) <= 1.0, f"{key}: paper {paper}, accelsim {ours:.4f}"


def test_tolerances_are_the_issue_s():
    assert {s: (t.kind, t.tolerance) for s, t in TOLERANCES.items()} == {
        "memory_capacity_savings": ("abs", 0.005), "pruned_layer_share_of_execution_time": ("abs", 0.01),
        "sparse_over_dense_speedup": ("rel", 0.02), "fp16_dense_over_dense_time_mean": ("rel", 0.03)}


def test_memory_figures_identical_across_models(reproduction):
    for (_model, config), memory in reproduction.memory.items():
        reference = reproduction.memory[("bert-base", config)]["pruned_linear"]
        assert memory["pruned_linear"]["compression_vs_dense"] == reference["compression_vs_dense"]




@pytest.mark.slow
@pytest.mark.parametrize("config", ["fp32", "fp16", "int8", "int8_sp", "int4", "int4_sp"])
def test_run_smoke_every_config_and_model(config):
    for model in ("bert-base", "wav2vec2-large", "vit-base"):
        result = accelsim("run", f"configs/{config}.yaml", "--model", model, "--format", "json")
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["total_cycles"] > 0 and summary["latency_ms"] > 0
        shares = sum(row["percent_of_time"] for row in summary["breakdown"])
        assert shares == pytest.approx(100.0)
        if config.endswith("_sp"):
            assert summary["speedup_vs_baseline"] > 1.15


def test_run_out_dir_and_refusals(tmp_path):
    out = tmp_path / "run"
    result = accelsim("run", "configs/int4_sp.yaml", "--model", "bert-base", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "speedup vs dense baseline (int4): 1.2" in result.stdout
    assert {p.name for p in out.iterdir()} == {"ops.csv", "summary.json", "time_breakdown.png", "time_breakdown.svg",
                                               "memory_by_group.png", "memory_by_group.svg",
                                               "energy_breakdown.png", "energy_breakdown.svg"}
    again = accelsim("run", "configs/int4_sp.yaml", "--model", "bert-base", "--out", str(out))
    assert again.returncode == 2 and "not empty" in again.stderr
    forced = accelsim("run", "configs/int4_sp.yaml", "--model", "bert-base", "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    csv_a = (out / "ops.csv").read_bytes()
    accelsim("run", "configs/int4_sp.yaml", "--model", "bert-base", "--out", str(out), "--force")
    assert (out / "ops.csv").read_bytes() == csv_a  # deterministic, byte for byte
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_reproduce_json_and_out(tmp_path):
    result = accelsim("reproduce", "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "rep"))
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert len(rows) == 18
    assert {"key", "paper", "accelsim", "rel_error", "role", "tolerance", "error_in_tolerances"} <= set(rows[0])
    roles = {r["key"]: r["role"] for r in rows}
    # only the 6 sparse speedups are predictions: the 6 shares and 2 FP16 ratios calibrate rapid_like,
    # and the 4 memory savings follow from storage arithmetic
    assert sorted(k for k, role in roles.items() if role == "predicted") == sorted(
        k for k in roles if k.startswith("sparse_over_dense_speedup."))
    assert sum(role == "fitted" for role in roles.values()) == 8
    assert sum(role == "identity" for role in roles.values()) == 4
    assert {r["tolerance"] for r in rows} == {"0.005", "0.01", "2%", "3%"}
    report = (tmp_path / "rep" / "reproduction.md").read_text()
    assert "predicted" in report and "fitted" in report and "identity" in report
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"reproduction.md", "figures.csv", "time_breakdown.png", "speedups.png", "memory_savings.png"} <= names


def test_sparse_baseline_refused(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nhardware: rapid_like\nprecision: {default: int8}\n"
                                        "sparsity: {weights: {pattern: '2:4'}}\n")
    (tmp_path / "c.yaml").write_text("name: c\nhardware: rapid_like\nprecision: {default: int8}\nbaseline: base\n")
    result = accelsim("run", str(tmp_path / "c.yaml"), "--model", "bert-base")
    assert result.returncode == 2 and "itself sparse" in result.stderr


@pytest.mark.parametrize(("args", "excluded"), [
    (["--model", "transformer-base", "--exclude-head"], "excluded=head"),  # FSMT has no head-less variant
    (["--model", "wav2vec2-large", "--exclude-frontend", "--exclude-head"], "excluded=frontend+head"),
    (["--model", "wav2vec2-large"], None),  # the default: the whole model
    (["--model", "bert-base", "--head", "pooler"], None),
    (["--model", "gpt2", "--include-head"], None),
])
def test_run_scope_of_frontend_and_head(args, excluded):
    result = accelsim("run", "configs/int4_sp.yaml", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["workload"].get("excluded") == (excluded.split("=")[1] if excluded else None)
    assert summary["scope"] == (f"backbone without {excluded.split('=')[1]}" if excluded else "whole model")


@pytest.mark.parametrize("args", [["--model", "bert-base", "--include-frontend"],
                                  ["--model", "bert-base", "--head", "none", "--exclude-head"]])
def test_run_refuses_scoping_a_part_the_model_lacks(args):
    result = accelsim("run", "int8", *args)
    assert result.returncode == 2 and "has no" in result.stderr


@pytest.mark.slow
def test_calibration_script_redoes_the_preset():
    """calibration/fit_rapid_like.py --quick lands on the preset's array, Wav2vec2 length and SFU costs."""
    import subprocess
    import sys

    from cli_helpers import ROOT

    out = subprocess.run([sys.executable, "calibration/fit_rapid_like.py", "--quick"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    hardware = load_hardware("rapid_like")
    frames = load_setup().models["wav2vec2-large"].tokens
    assert f"best: array {hardware.array.rows} x {hardware.array.cols}, wav2vec2 tokens {frames}," in out
    fitted = dict(line.split()[:2] for line in out.split("sfu.cycles_per_element:")[1].strip().splitlines())
    costs = hardware.sfu.cycles_per_element
    assert float(fitted["softmax"]) == costs["softmax"]
    assert float(fitted["conversion"]) == costs["quantize"] == costs["dequantize"]
    assert float(fitted["elementwise"]) == costs["add"] and costs["layernorm"] == pytest.approx(3 * costs["add"],
                                                                                                  abs=0.01)
