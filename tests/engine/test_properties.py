"""Invariants under random inputs (hypothesis), determinism across processes, outputs after SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from cli_helpers import ROOT, accelsim
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from simulator.engine import simulate
from simulator.engine.masks import masked_cycles, nm_mask
from simulator.engine.timing import gemm_cycles
from simulator.formats.sparsity import SparsityPattern
from simulator.formats.storage import parameter_storage
from simulator.spec.hardware import Hardware, load_hardware
from simulator.spec.run_config import policy_from_dict
from workloads.models import Workload, load_model

dataflows = st.sampled_from(["ws", "os", "is"])
timings = st.sampled_from(["default", "scalesim"])


@st.composite
def patterns(draw):
    group = draw(st.integers(1, 8))
    return SparsityPattern(draw(st.integers(1, group)), group)


@settings(max_examples=300, deadline=None)
@given(m=st.integers(1, 300), k=st.integers(1, 300), n=st.integers(1, 300), rows=st.integers(1, 64),
       cols=st.integers(1, 64), dataflow=dataflows, timing=timings, pack=st.integers(1, 16), pattern=patterns())
@example(m=1, k=2, n=1, rows=1, cols=1, dataflow="os", timing="scalesim", pack=1, pattern=SparsityPattern(2, 4))
def test_gemm_invariants(m, k, n, rows, cols, dataflow, timing, pack, pattern):
    dense = gemm_cycles(m, k, n, rows, cols, dataflow, pack=pack, timing=timing)
    sparse = gemm_cycles(m, k, n, rows, cols, dataflow, pack=pack, sparsity=pattern, timing=timing)
    # SCALE-Sim reports the last cycle's index (count - 1) and pads a partial N:M group to a whole one
    # in ws/is, which can make its sparse mode slower than dense (1 x 1 x 1 at 2:2 on 1 x 1 ws: 3 vs 1);
    # `--timing scalesim` reproduces that on purpose, so the invariants are stated for counts.
    counted = 1 if timing == "scalesim" else 0
    if timing == "default":
        assert sparse.compute_cycles <= dense.compute_cycles  # skipping zeros never costs time
        # Structured N:M is dense timing at the kept depth K', for every dataflow.
        assert sparse.compute_cycles == gemm_cycles(m, pattern.kept(k), n, rows, cols, dataflow,
                                                    pack=pack).compute_cycles
    for result, kept in ((dense, k), (sparse, pattern.kept(k))):
        cycles = result.compute_cycles + counted
        if result.reduction_depth * pack < kept:
            # SCALE-Sim's os sparse mode streams ceil(K N / M) weights, fewer than a partial group's
            # non-zeros (K = 2 at 2:4: 1 streamed, 2 kept); `--timing scalesim` reproduces that count.
            assert timing == "scalesim" and dataflow == "os" and result is sparse
            continue
        assert cycles * rows * cols * pack >= result.macs  # no more MACs than slots
        assert 0 < result.macs / (cycles * rows * cols * pack) <= 1


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 64), groups=st.integers(1, 12), n=st.integers(1, 40), rows=st.integers(1, 16),
       cols=st.integers(1, 16), dataflow=dataflows, pack=st.integers(1, 4), pattern=patterns(),
       seed=st.integers(0, 2**16))
def test_structured_closed_form_equals_mask_kernel(m, groups, n, rows, cols, dataflow, pack, pattern, seed):
    k = groups * pattern.m  # M divides K: every column keeps exactly the same count
    mask = nm_mask(k, n, pattern.n, pattern.m, seed)
    closed = gemm_cycles(m, k, n, rows, cols, dataflow, pack=pack, sparsity=pattern)
    assert masked_cycles(mask, m, rows, cols, dataflow, pack=pack)[0] == closed.compute_cycles


RAPID = load_hardware("rapid_like")


def hardware(rows, cols, dataflow, bandwidth, buffer_bytes, lanes):
    data = RAPID.model_dump()
    data["array"].update(rows=rows, cols=cols, dataflow=dataflow)
    data["memory"].update(dram_bytes_per_cycle=bandwidth, ifmap_buffer_bytes=buffer_bytes,
                          filter_buffer_bytes=buffer_bytes, ofmap_buffer_bytes=buffer_bytes)
    data["sfu"]["lanes"] = lanes
    return Hardware.model_validate(data)


POLICIES = {name: policy_from_dict({"name": name, "hardware": "rapid_like", "precision": {"default": precision},
                                    **({"sparsity": {"weights": {"pattern": "2:4"}}} if sparse else {})})
            for name, precision, sparse in [("fp16", "fp16", False), ("int8", "int8", False),
                                            ("int4_sp", "int4", True), ("int2", "int2", False)]}
TRACES = {tokens: load_model("bert-base").trace(Workload(tokens=tokens)) for tokens in (16, 64, 200)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 256), cols=st.integers(1, 256), dataflow=dataflows, bandwidth=st.floats(0.5, 512),
       buffer_log2=st.integers(10, 26), lanes=st.integers(1, 256), policy=st.sampled_from(sorted(POLICIES)),
       tokens=st.sampled_from(sorted(TRACES)))
def test_simulate_invariants(rows, cols, dataflow, bandwidth, buffer_log2, lanes, policy, tokens):
    trace, rules = TRACES[tokens], POLICIES[policy]
    base = simulate(trace, hardware(rows, cols, dataflow, bandwidth, 2**buffer_log2, lanes), rules)
    faster = simulate(trace, hardware(rows, cols, dataflow, 2 * bandwidth, 2**buffer_log2, lanes), rules)
    bigger = simulate(trace, hardware(rows, cols, dataflow, bandwidth, 2 ** (buffer_log2 + 2), lanes), rules)
    assert (faster["stall_cycles"] <= base["stall_cycles"]).all()  # more bandwidth never adds stalls
    assert (bigger["dram_bytes"] <= base["dram_bytes"]).all()  # a larger buffer never adds traffic
    array = base[base["unit"] == "array"]
    useful = (array["macs"] / array["macs_per_pe"]).sum()
    assert 0 < base.totals["utilization"] <= 1 and useful <= base.totals["total_cycles"] * rows * cols
    if "sp" not in policy:
        assert base.totals["macs"] == trace.macs  # MACs conserved from trace to results
    assert parameter_storage(trace, rules).total.params == trace.params  # parameters conserved
    assert (base["total_cycles"] >= base["compute_cycles"]).all() and (base["compute_cycles"] >= 0).all()


@settings(max_examples=30, deadline=None)
@given(model=st.sampled_from(["bert-base", "vit-base", "gpt2"]), group=st.integers(2, 8), seed=st.integers(0, 99))
def test_memory_monotone_in_width_and_density(model, group, seed):
    trace = load_model(model).trace()

    def bits(precision, pattern=None):
        data = {"name": "p", "hardware": "rapid_like", "precision": {"default": precision}}
        if pattern:
            data["sparsity"] = {"weights": {"pattern": pattern}}
        return parameter_storage(trace, policy_from_dict(data)).total.bits

    widths = [bits(f"int{w}") for w in range(2, 17)]
    assert widths == sorted(widths) and len(set(widths)) == len(widths)
    assert bits("int8") < bits("fp16") < bits("fp32")
    kept = [bits("int8", f"{n}:{group}") for n in range(1, group)]  # N = M prunes nothing: refused
    assert kept == sorted(kept)
    rng = np.random.default_rng(seed)
    low, high = sorted(rng.uniform(0.05, 1.0, 2))
    op = next(o for o in trace if o.role == "ffn1")
    unstructured = [parameter_storage(trace, policy_from_dict({"name": "u", "hardware": "rapid_like",
                                                        "precision": {"default": "int8"},
                                                        "sparsity": {"weights": {"density": d, "roles": ["ffn1"]}}}),
                              nonzeros=lambda o, d=d: round(d * o.k * o.n)).total.bits for d in (low, high)]
    assert unstructured[0] <= unstructured[1]
    assert op.k * op.n > 0


@pytest.mark.slow
def test_identical_results_across_processes():
    first = accelsim("run", "configs/int4_sp.yaml", "--model", "vit-base", "--format", "csv")
    second = accelsim("run", "configs/int4_sp.yaml", "--model", "vit-base", "--format", "csv")
    assert first.returncode == 0 and first.stdout == second.stdout and len(first.stdout) > 10_000


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from simulator.report.files import atomic_path, staged_dir
    target = Path(sys.argv[1])
    if sys.argv[2] == "file":
        with atomic_path(target) as tmp:
            with open(tmp, "w") as handle:
                handle.write("half of the data")
                handle.flush()
                print("writing", flush=True)
                time.sleep(60)
                handle.write(" and the rest")
    else:
        with staged_dir(target) as staging:
            (staging / "a.csv").write_text("first file")
            print("writing", flush=True)
            time.sleep(60)
            (staging / "b.csv").write_text("second file")
""")


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_sigkill_mid_write_leaves_nothing_half_written(tmp_path, kind):
    target = tmp_path / ("out.csv" if kind == "file" else "outdir")
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target), kind], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "writing"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not target.exists()  # neither a partial file nor a partial directory


@pytest.mark.slow
def test_sigkill_during_real_commands(tmp_path):
    """Kill `run --out` and `extract --out` at spread-out moments: the target is absent or complete."""
    for attempt, delay in enumerate((0.3, 0.6, 0.9, 1.2, 1.6, 2.2)):
        out_dir, out_file = tmp_path / f"run{attempt}", tmp_path / f"trace{attempt}.csv"
        commands = [
            ["run", "configs/int8.yaml", "--model", "vit-base", "--out", str(out_dir)],
            ["extract", "--model", "t5-3b", "--format", "csv", "--out", str(out_file)],
        ]
        for args in commands:
            process = subprocess.Popen([sys.executable, "-m", "simulator.cli.main", *args], cwd=ROOT,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        if out_dir.exists():
            assert {p.name for p in out_dir.iterdir()} >= {"ops.csv", "summary.json", "time_breakdown.png"}
        if out_file.exists():
            assert out_file.read_text().count("\n") > 100
