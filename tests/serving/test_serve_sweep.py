"""Serving sweeps: a rate axis over a request stream, each row what `accelsim serve` reports for that rate."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cli_helpers import accelsim

from simulator.analysis.sweep import load_sweep
from workloads.errors import InputError

SWEEP = """name: rates
hardware: tpu_v5e_like
axes:
  product: {rate: [2, 8]}
configs: [int8]
models: [{name: llama-2-7b, batch: 1}]
serve: {num_requests: 12, prompt_tokens: "uniform:64,256", output_tokens: "uniform:8,24", seed: 3,
        scheduler: chunked, slo: "ttft=200,tpot=20"}
"""


def test_each_rate_is_a_serve_run(tmp_path, run_cli):
    path = tmp_path / "rates.yaml"
    path.write_text(SWEEP)
    done = accelsim("sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(rows["rate"]) == [2.0, 8.0] and list(rows.columns).count("rate") == 1
    for _, row in rows.iterrows():
        summary = json.loads(run_cli("serve", "int8", "--model", "llama-2-7b", "--hardware", "tpu_v5e_like",
                                     "--num-requests", "12", "--rate", str(row["rate"]), "--prompt-tokens",
                                     "uniform:64,256", "--output-tokens", "uniform:8,24", "--seed", "3",
                                     "--scheduler", "chunked", "--slo", "ttft=200,tpot=20", "--json"))
        assert row["requests_per_s"] == pytest.approx(summary["throughput_requests_per_s"], rel=1e-12)
        assert row["goodput_requests_per_s"] == pytest.approx(summary["goodput_requests_per_s"], rel=1e-12)
        assert row["tpot_p99_ms"] == pytest.approx(summary["tpot_ms"]["p99"], rel=1e-12)
        assert row["ttft_p50_ms"] == pytest.approx(summary["ttft_ms"]["p50"], rel=1e-12)
        assert row["latency_ms"] == pytest.approx(summary["duration_s"] * 1e3, rel=1e-12)
        assert row["energy_per_token_uj"] == pytest.approx(summary["energy_per_token_j"] * 1e6, rel=1e-12)
        assert row["completed"] == summary["completed"] == 12
    assert rows["ttft_p99_ms"].iloc[1] >= rows["ttft_p99_ms"].iloc[0]  # a faster stream queues more


@pytest.mark.parametrize(("change", "message"), [
    (lambda text: text.split("serve:")[0], "the axis rate sets a serving sweep's arrival rate"),
    (lambda text: text.replace("batch: 1}", "batch: 1, new_tokens: 8}"), "drop new_tokens"),
    (lambda text: text.replace('prompt_tokens: "uniform:64,256"', 'prompt_tokens: "uniform:64"'), "prompt_tokens"),
    (lambda text: text.replace('slo: "ttft=200,tpot=20"', 'slo: "ttf=200"'), "slo"),
    (lambda text: text.replace("seed: 3,", "seed: 3, swap_space: 8,"), "--swap-space applies with --preemption swap"),
    (lambda text: text.replace("seed: 3,", "seed: 3, preemption: swapping,"), "preemption"),
])
def test_bad_serving_sweeps(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(change(SWEEP))
    with pytest.raises(InputError, match=message):
        load_sweep(path)


def test_a_sweeps_preemption_is_the_runs(tmp_path, run_cli):
    """A serving sweep's preemption and swap space reach its runs: on a chip whose cache runs out, the swap
    row and the recompute row differ, and each is what `accelsim serve` reports with those options."""
    import yaml
    from test_serving import MODEL, small_dram

    chip = tmp_path / "small.yaml"
    chip.write_text(yaml.safe_dump({**small_dram(16, 128).model_dump(exclude_none=True), "name": "small_dram"}))
    stream = ("num_requests: 30, prompt_tokens: 'uniform:8,120', output_tokens: 'uniform:40,130', seed: 5, "
              "max_tokens: 128")
    rows = {}
    for preemption in ("recompute", "swap"):
        path = tmp_path / f"{preemption}.yaml"
        extra = ", preemption: swap, swap_space: 1" if preemption == "swap" else ""
        path.write_text(f"name: {preemption}\nhardware: {chip}\naxes:\n  product: {{rate: [400]}}\nconfigs: [int8]\n"
                        f"models: [{{name: {MODEL}, batch: 1}}]\nserve: {{{stream}{extra}}}\n")
        done = accelsim("sweep", str(path), "--out", str(tmp_path / preemption), "--workers", "1", "--no-progress")
        assert done.returncode == 0, done.stderr
        rows[preemption] = pd.read_csv(tmp_path / preemption / "results.csv").iloc[0]
        options = ["--preemption", "swap", "--swap-space", "1"] if preemption == "swap" else []
        summary = json.loads(run_cli("serve", "int8", "--model", MODEL, "--hardware", str(chip), "--num-requests",
                                     "30", "--rate", "400", "--prompt-tokens", "uniform:8,120", "--output-tokens",
                                     "uniform:40,130", "--seed", "5", "--max-tokens", "128", *options, "--json"))
        assert summary["preemptions"] > 0 and summary["swaps"] == (summary["preemptions"] if options else 0)
        assert rows[preemption]["latency_ms"] == pytest.approx(summary["duration_s"] * 1e3, rel=1e-12)
    assert rows["swap"]["latency_ms"] != rows["recompute"]["latency_ms"]


def test_a_rate_whose_requests_never_fit_is_a_row_of_rejections(tmp_path):
    """None of the stream fits the chip's KV cache: each rate's row says so (the point ended in an internal
    error, and the run's duration came out negative), and nothing warns on the plot."""
    from test_serving import MODEL, small_dram_preset

    path = tmp_path / "never.yaml"
    path.write_text(f"name: never\nhardware: {small_dram_preset(tmp_path, 8)}\naxes: {{product: {{rate: [1, 2]}}}}\n"
                    f"configs: [int8]\nmodels: [{{name: {MODEL}, batch: 1}}]\n"
                    'serve: {num_requests: 3, prompt_tokens: "400", output_tokens: "100", slo: "ttft=5"}\n')
    done = accelsim("sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--no-progress")
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(rows["rejected"]) == [3, 3] and list(rows["completed"]) == [0, 0]
    assert list(rows["latency_ms"]) == [0.0, 0.0] and rows["tokens_per_s"].isna().all()
