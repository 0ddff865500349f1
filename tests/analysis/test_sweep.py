"""Sweeps: expansion and validation, local == Dask, kill and resume, failures recorded, bad files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_helpers import ROOT, TESTS, accelsim

from simulator.analysis.sweep import SweepSpec, design_points, load_sweep
from simulator.analysis.sweep_axes import check_axis_path
from workloads.errors import InputError

SMALL = """name: small
hardware: rapid_like
axes:
  product: {array.rows: [4, 8, 16], array.cols: [64, 128]}
  zip: {memory.dram_bytes_per_cycle: [64, 256], sfu.lanes: [32, 64]}
configs: [int8, int8_sp]
models: [bert-base, {name: vit-base, image_size: 224}]
"""




def test_design_points_product_times_zip():
    spec = SweepSpec.model_validate({"name": "s", "hardware": "h", "configs": ["int8"], "models": ["bert-base"],
                                     "axes": {"product": {"a.x": [1, 2], "a.y": [3, 4, 5]},
                                              "zip": {"b.u": [6, 7], "b.v": [8, 9]}}})
    points = design_points(spec.axes)
    assert len(points) == 2 * 3 * 2
    assert points[0] == {"a.x": 1, "a.y": 3, "b.u": 6, "b.v": 8}
    assert points[1] == {"a.x": 1, "a.y": 3, "b.u": 7, "b.v": 9}


def test_axis_paths_checked():
    check_axis_path("array.rows")
    check_axis_path("macs_per_pe.int8")
    check_axis_path("sfu.cycles_per_element.softmax")
    check_axis_path("model.new_tokens")
    check_axis_path("cores")
    for bad in ("array.depth", "arrays.rows", "array", "macs_per_pe", "array.rows.x", "model.phase", "model.bacth"):
        with pytest.raises(InputError):
            check_axis_path(bad)


def test_a_generation_sweep_matches_generate_at_every_point(tmp_path):
    """Workload axes (batch, new tokens) next to a hardware axis; a generation entry's row is what
    `accelsim generate` reports for that point."""
    import pandas as pd

    from simulator.analysis.generation import generate, generation_summary
    from simulator.engine import Simulator
    from simulator.report.energy import area_summary
    from simulator.spec.hardware import Hardware, load_hardware
    from simulator.spec.run_config import load_run_config
    from workloads.models import Workload, load_model

    (tmp_path / "g.yaml").write_text(
        "name: g\nhardware: rapid_like\naxes: {product: {model.batch: [1, 4], model.new_tokens: [2, 9], "
        "cores: [1, 2]}}\nconfigs: [int8]\nmodels: [{name: llama-3-8b, tokens: 16, new_tokens: 5}]\n")
    result = accelsim("sweep", str(tmp_path / "g.yaml"), "--out", str(tmp_path / "o"), "--workers", "1")
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(tmp_path / "o" / "results.parquet")
    assert len(table) == 8 and (table["error"] == "").all() and (table["phase"] == "generate").all()
    for _, row in table.iterrows():
        data = load_hardware("rapid_like").model_dump()
        data["cores"] = int(row["cores"])
        hardware = Hardware.model_validate(data)
        generation = generate(load_model("llama-3-8b"), Workload(batch=int(row["model.batch"]), tokens=16),
                              int(row["model.new_tokens"]), Simulator(hardware, load_run_config("int8")))
        summary = generation_summary(generation, hardware)
        assert (row["batch"], row["new_tokens"]) == (row["model.batch"], row["model.new_tokens"])
        assert row["utilization"] == pytest.approx(summary["utilization"])  # issue 30.9: was empty
        for column in ("ttft_ms", "tpot_ms", "tokens_per_s"):
            assert row[column] == pytest.approx(summary[column]), column
        assert row["latency_ms"] == pytest.approx(summary["e2e_ms"])
        assert row["energy_per_token_uj"] == pytest.approx(summary["energy"]["per_token_pj"] / 1e6)
        assert row["energy_uj"] == pytest.approx(summary["energy"]["total_pj"] / 1e6)
        assert row["area_mm2"] == pytest.approx(area_summary(hardware)["total_mm2"])
    assert (tmp_path / "o" / "pareto.png").stat().st_size > 0  # latency-energy-area front
    refused = tmp_path / "r.yaml"
    refused.write_text("name: r\nhardware: rapid_like\nconfigs: [int8]\nmodels: [{name: bert-base, new_tokens: 4}]\n")
    done = accelsim("sweep", str(refused), "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and "bert-base has no decoder" in done.stderr


def test_mixture_and_encoder_decoder_entries(tmp_path):
    """Mixtral entries with their expert imbalance (a column of its own) and an encoder-decoder
    generation; each row is what simulating that workload alone gives."""
    import pandas as pd

    from simulator.engine import simulate
    from simulator.spec.hardware import load_hardware
    from simulator.spec.run_config import load_run_config
    from workloads.models import Workload, load_model

    tiny = ROOT / "tests" / "configs" / "mixtral-window-8.json"
    (tmp_path / "m.yaml").write_text(
        "name: m\nhardware: rapid_like_4core\nconfigs: [int8]\n"
        f"models: [{{name: {tiny}, tokens: 16, batch: 4}}, {{name: {tiny}, tokens: 16, batch: 4, "
        "expert_imbalance: 2.0}, {name: transformer-base, tokens: 12, new_tokens: 4}]\n")
    result = accelsim("sweep", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "o"), "--workers", "1")
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(tmp_path / "o" / "results.parquet")
    assert (table["error"] == "").all(), table["error"].tolist()
    mixtral = table[table.model == str(tiny)]
    assert mixtral["expert_imbalance"].fillna(1.0).tolist() == [1.0, 2.0]
    for _, row in mixtral.iterrows():
        workload = Workload(batch=4, tokens=16, expert_imbalance=None if pd.isna(row["expert_imbalance"])
                            else row["expert_imbalance"])
        results = simulate(load_model(str(tiny)).trace(workload), load_hardware("rapid_like_4core"),
                           load_run_config("int8"))
        assert row["total_cycles"] == results.totals["total_cycles"]
    (generation,) = table[table.model == "transformer-base"].itertuples()
    assert generation.phase == "generate" and generation.tpot_ms > 0


def test_plan_ids_are_stable_and_unique(tmp_path):
    (tmp_path / "s.yaml").write_text(SMALL)
    _, plan = load_sweep(tmp_path / "s.yaml")
    _, again = load_sweep(tmp_path / "s.yaml")
    ids = [p.point_id for p in plan.points]
    assert len(ids) == 6 * 2 * 2 * 2 == len(set(ids))
    assert ids == [p.point_id for p in again.points]


@pytest.mark.slow
def test_shipped_sweep_local_and_dask_give_identical_tables(tmp_path):
    shipped = "configs/sweeps/pe_array.yaml"
    local = accelsim("sweep", shipped, "--out", str(tmp_path / "local"), "--workers", "2")
    assert local.returncode == 0, local.stderr
    assert "60 points (0 failed)" in local.stdout
    assert "not validated on silicon: no measured chip for rapid_like" in local.stdout
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    dask = accelsim("sweep", shipped, "--out", str(tmp_path / "dask"), "--executor", "dask", "--workers", "2",
                    "--no-progress", env={**os.environ, "TMPDIR": str(scratch)})
    assert dask.returncode == 0, dask.stderr
    assert not list(scratch.iterdir())  # nothing outlives the run (dask's scratch space included)
    assert (tmp_path / "local" / "results.csv").read_bytes() == (tmp_path / "dask" / "results.csv").read_bytes()
    (tmp_path / "s.yaml").write_text(SMALL)
    serial = accelsim("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "serial"), "--workers", "1")
    pooled = accelsim("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "pooled"), "--workers", "2")
    assert pooled.returncode == 0, pooled.stderr
    assert serial.returncode == 0, serial.stderr
    assert (tmp_path / "serial" / "results.csv").read_bytes() == (tmp_path / "pooled" / "results.csv").read_bytes()
    assert {"latency.png", "latency.svg", "results.parquet"} <= {p.name for p in (tmp_path / "local").iterdir()}


BIG = """name: big
hardware: rapid_like
axes:
  product: {array.rows: [4, 8, 16, 32], array.cols: [32, 64, 128, 256], sfu.lanes: [32, 64, 128]}
configs: [int8, int8_sp, int4, int4_sp]
models: [bert-base]
"""


@pytest.fixture(scope="module")
def big_reference(tmp_path_factory) -> Path:
    """The BIG sweep run uninterrupted once, for every interruption test to compare against."""
    directory = tmp_path_factory.mktemp("big")
    (directory / "s.yaml").write_text(BIG)
    reference = accelsim("sweep", str(directory / "s.yaml"), "--out", str(directory / "ref"), "--workers", "1",
                         "--no-progress")
    assert reference.returncode == 0, reference.stderr
    return directory / "ref" / "results.csv"


def _default_sigint() -> None:
    """A pytest-xdist worker ignores SIGINT, and a child inherits that (Python then installs no
    KeyboardInterrupt handler): the sweep must start as a user's shell starts it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_kill_and_resume_loses_nothing(tmp_path, sig, big_reference):
    (tmp_path / "s.yaml").write_text(BIG)
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "simulator.cli.main", "sweep", str(tmp_path / "s.yaml"), "--out",
                                str(out), "--workers", "1", "--no-progress"], cwd=ROOT, start_new_session=True,
                               stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    deadline = time.time() + 120
    # The first part holds one point and the rest of the sweep (191 points) is still to run: a window no
    # load on the machine can close before the signal lands (waiting for a third part left only one chunk).
    while time.time() < deadline and not list((out / "parts").glob("part-*.json")):
        time.sleep(0.02)
    os.killpg(process.pid, sig)
    process.wait(timeout=60)
    assert process.returncode != 0, "the sweep finished before it could be interrupted"
    finished = list((out / "parts").glob("part-*.json"))
    done_before = sum(len(json.loads(p.read_text())) for p in finished)
    assert 0 < done_before < 192 and not (out / "results.csv").exists()
    fresh = accelsim("sweep", str(tmp_path / "s.yaml"), "--out", str(out), "--workers", "1")
    assert fresh.returncode == 2 and "--resume" in fresh.stderr
    resumed = accelsim("sweep", str(tmp_path / "s.yaml"), "--out", str(out), "--workers", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done_before}/192 points" in resumed.stderr  # the progress bar starts from the finished ones
    assert (out / "results.csv").read_bytes() == big_reference.read_bytes()


def test_infeasible_point_recorded_and_sweep_goes_on(tmp_path):
    (tmp_path / "s.yaml").write_text("name: f\nhardware: rapid_like\naxes: {product: {array.rows: [0, 8]}}\n"
                                     "configs: [int8]\nmodels: [bert-base]\n")
    result = accelsim("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "(1 failed)" in result.stdout
    rows = (tmp_path / "o" / "results.csv").read_text().splitlines()
    assert "infeasible hardware: array.rows" in rows[1] and rows[2].endswith(",")


def test_resume_into_another_sweep_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nhardware: rapid_like\nconfigs: [int8]\nmodels: [bert-base]\n")
    (tmp_path / "b.yaml").write_text("name: b\nhardware: rapid_like\nconfigs: [int4]\nmodels: [bert-base]\n")
    assert accelsim("sweep", str(tmp_path / "a.yaml"), "--out", str(tmp_path / "o")).returncode == 0
    other = accelsim("sweep", str(tmp_path / "b.yaml"), "--out", str(tmp_path / "o"), "--resume")
    assert other.returncode == 2 and "different sweep" in other.stderr
    no_dask = accelsim("sweep", str(tmp_path / "a.yaml"), "--out", str(tmp_path / "p"), "--scheduler", "x:1")
    assert no_dask.returncode == 2 and "--executor dask" in no_dask.stderr


def test_resume_after_a_models_config_changed_is_refused_naming_it(tmp_path):
    """A model given as a path is read by the workers: edited between a run and --resume, the finished points
    were reported as the edited model's. An untouched one resumes (its finished points kept)."""
    model = tmp_path / "model.json"
    model.write_text((ROOT / "tests" / "configs" / "qwen2-0.5b.json").read_text())
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: r\nhardware: rapid_like\nconfigs: [int8]\nmodels: [{{name: {model}, tokens: 32}}]\n")
    out = str(tmp_path / "o")
    assert accelsim("sweep", str(sweep), "--out", out, "--no-progress").returncode == 0
    again = accelsim("sweep", str(sweep), "--out", out, "--resume", "--no-progress")
    assert again.returncode == 0 and "1 points (0 failed)" in again.stdout
    model.write_text(model.read_text().replace('"num_hidden_layers": 24', '"num_hidden_layers": 2'))
    edited = accelsim("sweep", str(sweep), "--out", out, "--resume", "--no-progress")
    assert edited.returncode == 2
    assert edited.stderr.strip().endswith(f"holds a different sweep (or none): {model} changed since it ran; cannot "
                                          "resume this one there")


def test_files_read_are_a_models_config_and_a_checkpoints_files_by_content(tmp_path):
    """What --resume compares (in process): a config file's bytes; a checkpoint directory's config.json and
    its weight files' names and sizes; the chip's energy table given as a path; nothing for a zoo name."""
    import shutil

    from simulator.cli.sweep_run import files_read

    model = tmp_path / "model.json"
    model.write_text((ROOT / "tests" / "configs" / "qwen2-0.5b.json").read_text())
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(ROOT / "tests" / "fixtures" / "checkpoints" / "ct_w4a16", checkpoint)
    table = tmp_path / "table.yaml"
    table.write_text((ROOT / "configs" / "energy" / "horowitz_45nm.yaml").read_text())
    chip = tmp_path / "chip.yaml"
    chip.write_text((ROOT / "configs" / "hardware" / "rapid_like.yaml").read_text().replace(
        "table: horowitz_45nm", f"table: {table}"))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: r\nhardware: {chip}\nconfigs: [int8]\nmodels: [{model}, {checkpoint}, gpt2]\n")
    before = files_read(load_sweep(sweep)[1])
    assert sorted(before) == [str(checkpoint), str(model), str(table)]  # not a zoo name
    bare = tmp_path / "bare.yaml"  # a chip without an energy model
    bare.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(chip.read_text()).items() if k != "energy"}))
    for hardware in ("rapid_like", bare):  # the shipped tables are part of accelsim
        other = tmp_path / "other.yaml"
        other.write_text(sweep.read_text().replace(str(chip), str(hardware)))
        assert sorted(files_read(load_sweep(other)[1])) == [str(checkpoint), str(model)]
    weights, config = checkpoint / "model.safetensors", checkpoint / "config.json"
    for edit, changed in ((lambda: model.write_text(model.read_text() + " "), model),
                          (lambda: config.write_text(config.read_text() + " "), checkpoint),
                          (lambda: weights.write_bytes(weights.read_bytes() + b"\0"), checkpoint),
                          (lambda: weights.rename(checkpoint / "other.safetensors"), checkpoint),
                          (lambda: table.write_text(table.read_text() + "\n"), table)):
        edit()
        after = files_read(load_sweep(sweep)[1])
        assert [path for path in after if after[path] != before[path]] == [str(changed)]
        before = after


@pytest.mark.slow
def test_existing_dask_scheduler(tmp_path):
    import dask
    from dask.distributed import LocalCluster

    (tmp_path / "s.yaml").write_text("name: d\nhardware: rapid_like\naxes: {product: {array.rows: [4, 8]}}\n"
                                     "configs: [int8, int8_sp]\nmodels: [bert-base]\n")
    local = accelsim("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "local"), "--workers", "1")
    scratch = str(tmp_path / "scratch")  # the test's own cluster leaves no dask-scratch-space in /tmp either
    with dask.config.set({"temporary-directory": scratch}), LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
            local_directory=scratch) as cluster:
        remote = accelsim("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "remote"), "--executor", "dask",
                          "--scheduler", cluster.scheduler_address, "--no-progress")
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr
    assert (tmp_path / "local" / "results.csv").read_bytes() == (tmp_path / "remote" / "results.csv").read_bytes()
    unreachable = accelsim("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "x"), "--executor", "dask",
                           "--scheduler", "tcp://127.0.0.1:9")
    assert unreachable.returncode == 2 and "cannot connect" in unreachable.stderr


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:\t")[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.slow
def test_sigkilled_sweep_leaves_no_worker_behind_and_resume_clears_staging(tmp_path):
    (tmp_path / "s.yaml").write_text(BIG)
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "simulator.cli.main", "sweep", str(tmp_path / "s.yaml"), "--out",
                                str(out), "--workers", "2", "--no-progress"], cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and (len(workers) < 2 or not list((out / "parts").glob("part-*.json"))):
        workers = _children(process.pid)
        time.sleep(0.05)
    assert len(workers) >= 2, "the pool never started"
    (out / ".results.csv.abc.tmp").write_text("a write cut short")  # as a kill mid-write leaves it
    os.kill(process.pid, signal.SIGKILL)  # the parent only, not its process group
    process.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)], "pool workers outlived the sweep"
    resumed = accelsim("sweep", str(tmp_path / "s.yaml"), "--out", str(out), "--workers", "1", "--resume",
                       "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert not [p.name for p in out.rglob(".*.tmp")]


def test_failed_start_leaves_nothing(tmp_path):
    (tmp_path / "s.yaml").write_text("name: a\nhardware: rapid_like\nconfigs: [int8]\nmodels: [bert-base]\n")
    for args in (["--scheduler", "x:1"], ["--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"]):
        result = accelsim("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), *args)
        assert result.returncode == 2 and not (tmp_path / "o").exists()
    rerun = accelsim("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--workers", "1")
    assert rerun.returncode == 0, rerun.stderr


@pytest.mark.parametrize("fails", ["LocalCluster", "Client"])
def test_a_dask_cluster_that_does_not_start_leaves_nothing(tmp_path, monkeypatch, fails):
    """Its scratch space is removed (and a cluster that started, closed) when the cluster or its client fails."""
    import tempfile

    import dask.distributed

    from simulator.cli.sweep_run import make_executor

    closed = []

    class Started:
        def close(self):
            closed.append(True)

    def refuse(*args, **kwargs):
        raise OSError("no cluster here")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(dask.distributed, "LocalCluster", refuse if fails == "LocalCluster" else lambda **_: Started())
    monkeypatch.setattr(dask.distributed, "Client", refuse)
    with pytest.raises(OSError, match="no cluster here"):
        make_executor("dask", 2, None)
    assert not list(tmp_path.iterdir())
    assert closed == ([True] if fails == "Client" else [])


def test_table_columns_are_typed_and_split(tmp_path):
    """Knobs get columns of their own (entries take phase, head, decoder_tokens), stored bits come apart,
    integers stay integers when a point fails, and two configs with one `name:` are refused."""
    import pandas as pd

    (tmp_path / "s.yaml").write_text(
        "name: t\nhardware: rapid_like\naxes: {product: {array.rows: [0, 8]}}\nconfigs: [int8, int8_sp]\n"
        "models: [{name: gpt2, tokens: 64, phase: decode, head: none}, {name: t5-3b, tokens: 16, "
        "decoder_tokens: 4}, {name: bert-base, tokens: 32}]\n")
    result = accelsim("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--workers", "1")
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(tmp_path / "o" / "results.parquet")
    assert str(table["total_cycles"].dtype) == "Int64" and table["total_cycles"].isna().sum() == 6
    gpt2 = table[(table.model == "gpt2") & (table["array.rows"] == 8)].iloc[0]
    assert (gpt2["tokens"], gpt2["phase"], gpt2["head"]) == (64, "decode", "none")
    t5 = table[(table.model == "t5-3b") & (table["array.rows"] == 8)].iloc[0]
    assert (t5["tokens"], t5["decoder_tokens"], t5["phase"]) == (16, 4, "prefill")
    ok = table[table["error"] == ""]
    assert str(table["energy_uj"].dtype) == "Float64" and ok["energy_uj"].gt(0).all() and ok["area_mm2"].gt(0).all()
    assert (ok["stored_bits"] == ok[["value_bits", "index_bits", "scale_bits", "bias_bits"]].sum(axis=1)).all()
    assert (ok[ok.config == "int8_sp"]["index_bits"] > 0).all() and (ok[ok.config == "int8"]["index_bits"] == 0).all()
    csv_line = (tmp_path / "o" / "results.csv").read_text().splitlines()[1]
    assert ".0," not in csv_line.split(",infeasible")[0]  # a failed point does not turn integers into floats
    (tmp_path / "twin.yaml").write_text((ROOT / "configs" / "int8.yaml").read_text())
    (tmp_path / "d.yaml").write_text("name: d\nhardware: rapid_like\nconfigs: [int8, twin]\nmodels: [bert-base]\n")
    twins = accelsim("sweep", str(tmp_path / "d.yaml"), "--out", str(tmp_path / "p"))
    assert twins.returncode == 2 and "name: int8" in twins.stderr
    bad_knob = tmp_path / "k.yaml"
    bad_knob.write_text("name: k\nhardware: rapid_like\nconfigs: [int8]\nmodels: [{name: bert-base, phase: decode}]\n")
    refused = accelsim("sweep", str(bad_knob), "--out", str(tmp_path / "q"))
    assert refused.returncode == 2 and "--phase" in refused.stderr


def test_pareto_front_keeps_exactly_the_undominated_points():
    import pandas as pd

    from simulator.cli.sweep_run import pareto_mask

    table = pd.DataFrame({"latency": [1, 2, 2, 3, 1], "energy": [3, 2, 3, 1, 3]})  # the last ties the first
    assert list(pareto_mask(table, ("latency", "energy"))) == [True, True, False, True, True]


def test_progress_writes_to_the_stderr_of_the_moment(monkeypatch):
    """The bar writes to sys.stderr as it is when the sweep runs, not as it was when the module was
    imported (a replaced stream, since closed, failed in-process runs: 'I/O operation on closed file')."""
    import io

    from simulator.cli.sweep_run import Progress

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    Progress(3, 0).advance(3)
    assert "3/3 points" in stream.getvalue()


def test_configs_with_weight_scales_sweep(tmp_path, run_cli):
    """Issue 30.1: every config that sets weight_scales crashed a sweep (a dumped config did not re-validate)."""
    (tmp_path / "s.yaml").write_text("name: scales\nhardware: tpu_v5e_like\naxes: {product: {model.batch: [1]}}\n"
                                     "configs: [w4a16_g128, w8a8]\nmodels: [{name: gpt2, tokens: 16}]\n")
    run_cli("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--workers", "1", "--no-progress")
    import pandas as pd

    table = pd.read_csv(tmp_path / "o" / "results.csv")
    assert list(table["config"]) == ["w4a16_g128", "w8a8"] and (table["error"].isna()).all()


def test_a_failed_start_leaves_no_out_dir_but_finished_points_stay(tmp_path):
    from simulator.cli.sweep_run import discard_unfinished

    fresh = tmp_path / "fresh"
    (fresh / "parts").mkdir(parents=True)
    (fresh / "sweep.json").write_text("{}")
    discard_unfinished(fresh, existed=False)
    assert not fresh.exists()
    given = tmp_path / "given"
    (given / "parts").mkdir(parents=True)
    (given / "sweep.json").write_text("{}")
    discard_unfinished(given, existed=True)
    assert given.is_dir() and not any(given.iterdir())  # the user's empty directory, as it was
    kept = tmp_path / "kept"
    (kept / "parts").mkdir(parents=True)
    (kept / "parts" / "part-00000000.json").write_text('[{"point_id": "a"}]')
    discard_unfinished(kept, existed=False)
    assert (kept / "parts" / "part-00000000.json").exists()


@pytest.mark.parametrize(("entry", "refusal"), [
    ({"name": "t5-3b", "new_tokens": 5, "decoder_tokens": 50}, "decoder_tokens does not apply to a generation"),
    ({"name": "gpt2", "new_tokens": 5, "phase": "decode"}, "phase does not apply to a generation"),
])
def test_knobs_a_generation_would_ignore_are_refused(entry, refusal):
    """Issue 30.6: decoder_tokens was echoed in the rows of an encoder-decoder generation and changed nothing."""
    from simulator.analysis.sweep import ModelEntry, check_entry
    from workloads.models import load_model

    with pytest.raises(InputError, match=refusal):
        check_entry(load_model(entry["name"]), ModelEntry.model_validate(entry), True, False)


def test_decode_rows_report_energy_per_token_and_formats_their_speedup(tmp_path, run_cli):
    """Issue 30.9: a decode step generates one token per sequence; a format config's speedup is over the
    chip's own dense format (its baseline: native)."""
    import pandas as pd

    from simulator.engine import simulate
    from simulator.spec.hardware import load_hardware
    from simulator.spec.run_config import load_run_config
    from workloads.models import Workload, load_model

    (tmp_path / "d.yaml").write_text("name: d\nhardware: tpu_v5e_like\nconfigs: [w8a8]\n"
                                     "models: [{name: gpt2, tokens: 64, batch: 4, phase: decode}]\n")
    run_cli("sweep", str(tmp_path / "d.yaml"), "--out", str(tmp_path / "o"), "--workers", "1", "--no-progress")
    row = pd.read_csv(tmp_path / "o" / "results.csv").iloc[0]
    assert row["energy_per_token_uj"] == pytest.approx(row["energy_uj"] / 4)
    step = load_model("gpt2").trace(Workload(tokens=64, batch=4, phase="decode"))
    tpu = load_hardware("tpu_v5e_like")
    native = simulate(step, tpu, load_run_config("native")).totals["total_cycles"]
    assert row["speedup_vs_baseline"] == pytest.approx(native / row["total_cycles"])
    assert row["effective_tops_per_w"] == pytest.approx(row["tops_per_w"])  # dense: every MAC is useful


def test_an_attention_kernel_axis_sets_every_configs_kernel_and_its_baselines(tmp_path, run_cli):
    """`attention.kernel` and `attention.block_q` axes: each row is the run of its config with that kernel;
    the speedup is against the baseline run with the same kernel (comparisons compare formats)."""
    import pandas as pd

    from simulator.engine import simulate
    from simulator.spec.hardware import load_hardware
    from simulator.spec.run_config import load_run_config, policy_from_dict
    from workloads.models import Workload, load_model

    (tmp_path / "s.yaml").write_text(
        "name: kernels\nhardware: tpu_v5e_like\naxes: {zip: {attention.kernel: [fused, materialized, fused], "
        "attention.block_q: [null, null, 128]}}\nconfigs: [w8a8]\nmodels: [{name: gpt2, tokens: 512}]\n")
    run_cli("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--workers", "1", "--no-progress")
    table = pd.read_csv(tmp_path / "o" / "results.csv")
    assert table["error"].isna().all() and list(table["attention.block_q"].isna()) == [True, True, False]
    trace = load_model("gpt2").trace(Workload(tokens=512))
    hardware = load_hardware("tpu_v5e_like")
    w8a8 = load_run_config("w8a8").config.model_dump()
    native = load_run_config("native").config.model_dump()  # w8a8's baseline
    for _, row in table.iterrows():
        attention = {"kernel": row["attention.kernel"]}
        if not pd.isna(row["attention.block_q"]):
            attention["block_q"] = int(row["attention.block_q"])
        runs = [simulate(trace, hardware, policy_from_dict({**config, "attention": attention}))
                for config in (w8a8, native)]
        assert row["total_cycles"] == runs[0].totals["total_cycles"]
        assert row["speedup_vs_baseline"] == pytest.approx(runs[1].totals["total_cycles"] / row["total_cycles"])
    assert table["total_cycles"][0] < table["total_cycles"][1]  # fused, then materialized
    (tmp_path / "bad.yaml").write_text("name: b\nhardware: tpu_v5e_like\naxes: {product: {attention.kernal: [fused]}}"
                                       "\nconfigs: [w8a8]\nmodels: [gpt2]\n")
    with pytest.raises(AssertionError, match="attention.kernel"):
        run_cli("sweep", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "b"), "--no-progress")


def test_a_sweep_runs_each_checkpoint_under_its_own_recipe(tmp_path, run_cli):
    """`configs: [checkpoint]`: each model entry (a checkpoint directory) runs its own derived config, next to
    the other configs; a row equals `run checkpoint` of that checkpoint."""
    import pandas as pd

    fixtures = ROOT / "tests" / "fixtures" / "checkpoints"
    models = [str(fixtures / "ct_w4a16"), str(fixtures / "ct_w8a8")]
    (tmp_path / "s.yaml").write_text(
        f"name: ckpt\nhardware: tpu_v5e_like\nconfigs: [checkpoint, native]\n"
        f"models: [{{name: {models[0]}, tokens: 32}}, {{name: {models[1]}, tokens: 32}}]\n")
    run_cli("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--workers", "1", "--no-progress")
    table = pd.read_csv(tmp_path / "o" / "results.csv")
    assert len(table) == 4 and table["error"].isna().all()
    for model in models:
        row = table[(table["model"] == model) & (table["config"] == Path(model).name)].iloc[0]
        ran = json.loads(run_cli("run", "checkpoint", "--model", model, "--tokens", "32", "--hardware",
                                        "tpu_v5e_like", "--json"))
        assert row["total_cycles"] == ran["total_cycles"]
        assert row["speedup_vs_baseline"] == pytest.approx(ran["speedup_vs_baseline"])


@pytest.mark.parametrize(("axes", "refusal"), [  # each ended in an internal error after the sweep began
    ({"product": {"memory.dram_bytes_per_cycle": [8, True]}}, "its values mix flags and numbers"),  # ArrowTypeError
    ({"product": {"array.rows": [16, {"a": 1}]}}, r"{'a': 1} is not a value an axis takes \(a number, a string, a flag "
                                                  r"or null\)"),
    ({"product": {"array.rows": [16, [32]]}}, r"\[32\] is not a value an axis takes"),
    ({"product": {"array.rows": [16, float("nan")]}}, "nan is not a value an axis takes"),
    ({"product": {"model.new_tokens": [2, "int8"]}}, "mix numbers and strings"),  # a pydantic ValidationError
    ({"product": {"model.new_tokens": ["two"]}}, "new_tokens: Input should be a valid integer"),
])
def test_axis_values_an_axis_cannot_take_are_refused_before_any_work(tmp_path, axes, refusal):
    spec = {"name": "s", "hardware": "tpu_v5e_like", "configs": ["int8"], "axes": axes,
            "models": [{"name": str(TESTS / "configs" / "llama-serve-6.json"), "tokens": 16, "new_tokens": 2}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))  # YAML: NaN is .nan
    with pytest.raises(InputError, match=refusal):
        load_sweep(tmp_path / "s.yaml")


@pytest.mark.parametrize(("axis", "values", "refusal"), [
    ("chips", [2, 1.5], r"axis 'chips' takes integers of 2 or more \(a system's chips\), got \[2, 1.5\]"),
    ("chips", [2, -1], "axis 'chips' takes integers of 2 or more"),  # a complex square root
    ("chips", [2, None], "axis 'chips' takes integers of 2 or more"),  # a TypeError
    ("chips", [2, 1], "axis 'chips' takes integers of 2 or more"),
    ("chips", [2, True], "its values mix flags and numbers"),
    ("rate", [1, None], "axis 'rate' takes positive numbers"),
    ("rate", [1, 0], r"axis 'rate' takes positive numbers \(requests per second\)"),
])
def test_chips_and_rate_axes_take_positive_counts(tmp_path, axis, values, refusal):
    spec = sweep_of(axis, values)
    (tmp_path / "s.yaml").write_text(json.dumps(spec))
    with pytest.raises(InputError, match=refusal):
        load_sweep(tmp_path / "s.yaml")


@pytest.mark.parametrize(("axis", "values"), [("chips", [2, 4]), ("rate", [0.5, 2, 1e-3])])
def test_chips_and_rate_axes_that_are_counts_are_read(tmp_path, axis, values):
    (tmp_path / "s.yaml").write_text(json.dumps(sweep_of(axis, values)))
    _, plan = load_sweep(tmp_path / "s.yaml")
    assert [point.axes[axis] for point in plan.points] == values


def sweep_of(axis: str, values: list) -> dict:
    spec = {"name": "s", "hardware": "tpu_v5e_x4", "configs": ["int8"], "axes": {"product": {axis: values}},
            "models": [{"name": str(TESTS / "configs" / "llama-serve-6.json"), "tokens": 16}]}
    if axis == "rate":
        spec.update(hardware="tpu_v5e_like", serve={"num_requests": 2})
    return spec


def test_a_system_of_more_chips_than_a_system_holds_is_an_infeasible_point():
    from simulator.spec.system import load_target, system_with_chips

    system = load_target("tpu_v5e_x4").system
    with pytest.raises(InputError, match="chips: Input should be less than or equal to 65536"):
        system_with_chips(system, 2**40)  # a pydantic ValidationError, after a million-step search for a shape
