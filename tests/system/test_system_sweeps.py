"""Sweeps and run configs over systems of chips: the chips and parallel.* axes, a config's parallel plan,
and the rows equal to `generate` at every point."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cli_helpers import accelsim, assert_one_line_error

from simulator.analysis.generation import generate, generation_summary
from simulator.analysis.sweep import load_sweep
from simulator.analysis.sweep_axes import check_axis_path
from simulator.engine import Simulator
from simulator.spec.run_config import load_run_config
from simulator.spec.system import ParallelPlan, load_target, system_with_chips
from workloads.errors import InputError
from workloads.models import Workload, load_model

SWEEP = """name: chips
hardware: tpu_v5e_x8
axes:
  zip: {chips: [2, 4], parallel.tp: [2, 4]}
configs: [int8]
models:
  - {name: llama-2-7b, tokens: 64, new_tokens: 4, batch: 2}
"""


def test_a_chips_sweep_matches_generate_at_every_point(tmp_path):
    path = tmp_path / "chips.yaml"
    path.write_text(SWEEP)
    result = accelsim("sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(rows["chips"]) == [2, 4] and list(rows["tp"]) == [2, 4] and list(rows.columns).count("chips") == 1
    for _, row in rows.iterrows():
        target = load_target("tpu_v5e_x8")
        system = system_with_chips(target.system, int(row["chips"]))
        generation = generate(load_model("llama-2-7b"), Workload(tokens=64, batch=2, tp=int(row["tp"])), 4,
                              Simulator(target.hardware, load_run_config("int8"), system=system))
        summary = generation_summary(generation, target.hardware)
        assert row["tpot_ms"] == pytest.approx(summary["tpot_ms"], rel=1e-12)
        assert row["tokens_per_s_per_chip"] == pytest.approx(summary["tokens_per_s_per_chip"], rel=1e-12)
        assert row["collective_share"] == pytest.approx(summary["collective_share"], rel=1e-12)
        assert row["energy_uj"] == pytest.approx(summary["energy"]["total_pj"] / 1e6, rel=1e-12)


def test_a_torus_takes_the_squarest_shape():
    torus = load_target("tpu_v5e_x8").system
    assert [system_with_chips(torus, n).interconnect.shape for n in (4, 8, 16, 32, 6)] == [
        (2, 2), (2, 4), (4, 4), (4, 8), (2, 3)]


def test_parallel_axes_are_checked(tmp_path):
    check_axis_path("parallel.tp")
    check_axis_path("chips")
    with pytest.raises(InputError, match="unknown axis 'parallel.tq'; did you mean 'parallel.tp'"):
        check_axis_path("parallel.tq")
    path = tmp_path / "one_chip.yaml"
    path.write_text(SWEEP.replace("hardware: tpu_v5e_x8", "hardware: tpu_v5e_like"))
    with pytest.raises(InputError, match="need a system preset as hardware, not tpu_v5e_like"):
        load_sweep(path)


def test_a_run_configs_plan_is_the_default_and_the_command_line_overrides_it(tmp_path, run_cli):
    config = tmp_path / "int8_tp4.yaml"
    config.write_text("name: int8_tp4\nhardware: tpu_v5e_x4\nprecision: {default: int8}\nparallel: {tp: 4}\n")
    assert load_run_config(str(config)).config.parallel == ParallelPlan(tp=4)
    summary = json.loads(run_cli("generate", str(config), "--model", "llama-2-7b", "--prompt", "16",
                                 "--new-tokens", "2", "--format", "json"))
    assert summary["parallel"]["tp"] == 4 and summary["chips"] == 4
    result = accelsim("generate", str(config), "--model", "llama-2-7b", "--prompt", "16", "--new-tokens", "2",
                      "--tp", "2")
    assert_one_line_error(result, "--tp 2 uses 2 of tpu_v5e_x4's 4 chips")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nhardware: tpu_v5e_x4\nprecision: {default: int8}\nparallel: {tp: 0}\n")
    assert_one_line_error(accelsim("generate", str(bad), "--model", "llama-2-7b", "--prompt", "16",
                                   "--new-tokens", "2"), "parallel.tp")
