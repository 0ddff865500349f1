"""Speed benchmark (not a test): accelsim vs SCALE-Sim 3.0.0 on the same GEMMs, a whole BERT-base
forward pass, and the unstructured-mask kernel over all BERT-base linear weights.

Run: .venv/bin/python benchmarks/bench_engine.py [--skip-scalesim]
Targets (issue: engine): >= 10,000x faster than SCALE-Sim with identical cycles; BERT-base forward
< 50 ms once compiled; masks of ~85M weights < 2 s. Issue 11 (data movement): BERT-base at batch 64
on tpu_v1_like (several sample groupings tried) < 100 ms warm. Issue 13 (generation): Llama-2-7B,
prompt 512, 128 new tokens < 1 s warm; 4096 new tokens < 3 s (Llama-2-7B holds 4096 positions, so
that run is Llama-3-8B's; Llama-2-7B's longest, 3585 new tokens, is timed too). Issue 27 (fused
attention): a 131,072-token prefill of Llama-3.1-8B < 2 s, and 4,096 new tokens after a 32k prompt
< 3 s.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.analysis.generation import generate
from simulator.engine import Simulator, simulate
from simulator.engine.masks import magnitude_mask, masked_cycles
from simulator.engine.timing import gemm_cycles
from simulator.spec.hardware import Hardware, load_hardware
from simulator.spec.run_config import load_run_config
from verification.scalesim_peer import run_scalesim
from workloads.models import Workload, load_model

ROOT = Path(__file__).resolve().parents[1]
# BERT-base FFN1 (M, K, N) on the arrays SCALE-Sim's published counts use.
PEER_CASES = [((384, 768, 3072), 128, 128, "ws"), ((384, 768, 3072), 128, 128, "os"),
              ((384, 768, 3072), 32, 32, "os")]


def best_of(fn, repeats: int = 5) -> float:
    """Fastest of ``repeats`` calls, each timed as ``timeit`` does: with the garbage collector paused (a
    full collection of the process's heap, numba and pandas included, would land on whichever call
    happens to trigger it)."""
    times = []
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-scalesim", action="store_true", help="skip the (minutes-long) SCALE-Sim runs")
    args = parser.parse_args()

    print("1. accelsim --timing scalesim vs SCALE-Sim 3.0.0 (same GEMM, same compute cycles)")
    print("   (accelsim s: one in-process call, as a sweep makes it; CLI s: a whole `accelsim gemm` process,\n"
          "   Python start-up and imports included; SCALE-Sim s: a whole SCALE-Sim run)")
    print(f"   {'GEMM (M,K,N)':<18} {'array':>8} {'df':>3} {'cycles':>9} {'SCALE-Sim s':>12} {'accelsim s':>11} "
          f"{'ratio':>10} {'CLI s':>7} {'ratio':>7}")
    for (m, k, n), rows, cols, dataflow in PEER_CASES:
        ours = gemm_cycles(m, k, n, rows, cols, dataflow, timing="scalesim").compute_cycles
        shape = (m, k, n, rows, cols, dataflow)
        ours_s = best_of(lambda shape=shape: gemm_cycles(*shape, timing="scalesim"), 50)
        if args.skip_scalesim:
            print(f"   {str((m, k, n)):<18} {rows}x{cols:<5} {dataflow:>3} {ours:>9} {'skipped':>12} {ours_s:>11.2e}")
            continue
        with tempfile.TemporaryDirectory() as workdir:
            start = time.perf_counter()
            peer = run_scalesim(Path(workdir), rows, cols, dataflow, [(m, k, n, None)], sparse=False, timeout_s=3600)[0]
            peer_s = time.perf_counter() - start
        same = "same" if peer == ours else f"DIFFERENT ({peer})"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "simulator.cli.main", "gemm", "--m", str(m), "--k", str(k), "--n", str(n),
                        "--rows", str(rows), "--cols", str(cols), "--dataflow", dataflow, "--timing", "scalesim",
                        "--json"], check=True, capture_output=True, cwd=ROOT)
        cli_s = time.perf_counter() - start
        print(f"   {str((m, k, n)):<18} {rows}x{cols:<5} {dataflow:>3} {ours:>9} {peer_s:>12.1f} {ours_s:>11.2e} "
              f"{peer_s / ours_s:>9.0f}x {cli_s:>7.2f} {peer_s / cli_s:>6.0f}x  cycles {same}")

    print("\n2. whole BERT-base forward pass (every op, 12 layers, int4_sp on rapid_like)")
    trace = load_model("bert-base").trace()
    hardware = load_hardware("rapid_like")
    policy = load_run_config(ROOT / "configs" / "int4_sp.yaml")
    first = best_of(lambda: simulate(trace, hardware, policy), 1)
    warm = [best_of(lambda: simulate(trace, hardware, policy), 1) for _ in range(10)]
    print(f"   first call {1e3 * first:.1f} ms, then median {1e3 * statistics.median(warm):.1f} ms "
          f"(target < 50 ms) over {len(trace)} trace ops")
    big = load_model("bert-base").trace(Workload(batch=64))
    tpu, int8 = load_hardware("tpu_v1_like"), load_run_config(ROOT / "configs" / "int8.yaml")
    warm = [best_of(lambda: simulate(big, tpu, int8), 1) for _ in range(9)]
    notes = simulate(big, tpu, int8).notes
    # Run to run, this 2-core VM's speed drifts by up to ~1.7x: the best run is printed too.
    print(f"   batch 64, int8 on tpu_v1_like: median {1e3 * statistics.median(warm):.1f} ms, best "
          f"{1e3 * min(warm):.1f} ms over 9 runs (target < 100 ms); {notes[-1] if notes else 'one group'}")

    print("\n3. generation: a prefill, then decode steps over a growing KV cache (int8 on tpu_v1_like)")
    for model, prompt, new, target in (("llama-2-7b", 512, 128, 1.0), ("llama-2-7b", 512, 3585, 3.0),
                                       ("llama-3-8b", 512, 4096, 3.0)):
        spec = load_model(model)
        generate(spec, Workload(tokens=prompt), 3, Simulator(tpu, int8))  # imports and compilation outside
        elapsed = best_of(lambda spec=spec, prompt=prompt, new=new: generate(
            spec, Workload(tokens=prompt), new, Simulator(tpu, int8)), 3)
        print(f"   {model}, prompt {prompt}, {new} new tokens: {elapsed:.2f} s (target < {target:.0f} s)")

    print("\n4. unstructured-mask kernel over every BERT-base linear weight matrix")
    linear = [op for op in trace if op.role in ("q", "k", "v", "attn_out", "ffn1", "ffn2")]
    masks = [magnitude_mask(op.k, op.n, 0.5, seed) for seed, op in enumerate(linear)]
    weights = sum(mask.size for mask in masks)
    masked_cycles(masks[0][:8, :8], 4, 4, 4, "ws")  # compile (or load the cache) outside the timing
    pairs = list(zip(masks, linear, strict=True))
    elapsed = best_of(lambda: [masked_cycles(mask, op.m, 4, 128, "ws", pack=8) for mask, op in pairs], 3)
    print(f"   {weights / 1e6:.1f}M weights in {elapsed:.3f} s (target < 2 s): "
          f"{weights / elapsed / 1e6:.0f}M weights/s")

    print("\n5. what energy adds: the same runs with and without the preset's energy section, interleaved")
    plain = Hardware.model_validate({**hardware.model_dump(), "energy": None})
    with_energy, without = [], []
    for _ in range(10):
        with_energy.append(best_of(lambda: simulate(trace, hardware, policy).totals, 1))
        without.append(best_of(lambda: simulate(trace, plain, policy).totals, 1))
    ratio = statistics.median(with_energy) / statistics.median(without)
    print(f"   BERT-base run: {1e3 * statistics.median(with_energy):.1f} ms with energy, "
          f"{1e3 * statistics.median(without):.1f} ms without: x{ratio:.3f} (target <= 1.20)")
    rows = [8, 12, 16, 20, 24, 28, 32, 40]  # new design points: the per-action costs are built for each
    points = {True: 0.0, False: 0.0}
    for energy in (True, False, True, False):
        for size in rows:
            data = hardware.model_dump()
            data["array"].update(rows=size, cols=size + energy)  # distinct hardware: nothing memoised
            if not energy:
                data["energy"] = None
            point = Hardware.model_validate(data)
            points[energy] += best_of(lambda point=point: simulate(trace, point, policy).totals, 1)
    print(f"   sweep points (BERT-base, {len(rows)} new arrays, twice): {points[True] / points[False]:.3f}x "
          "with energy (target <= 1.20)")

    print("\n6. long contexts, fused attention (int8 on tpu_v5e_like)")
    v5e = load_hardware("tpu_v5e_like")
    # A 128k prefill's activations and cache exceed the chip's 16 GB, which the run refuses: timed here
    # with the capacity check widened (a speed benchmark, not a deployment answer).
    roomy = Hardware.model_validate({**v5e.model_dump(), "memory": {**v5e.memory.model_dump(),
                                                                     "dram_capacity_bytes": 64_000_000_000}})
    long_trace = load_model("llama-3.1-8b").trace(Workload(tokens=131072, head="none"))
    elapsed = best_of(lambda: simulate(long_trace, roomy, int8), 3)
    print(f"   llama-3.1-8b prefill of 131,072 tokens: {elapsed:.2f} s (target < 2 s)")
    spec = load_model("llama-3.1-8b")
    elapsed = best_of(lambda: generate(spec, Workload(tokens=32768), 4096, Simulator(v5e, int8)), 3)
    print(f"   llama-3.1-8b, prompt 32,768, 4,096 new tokens: {elapsed:.2f} s (target < 3 s)")


if __name__ == "__main__":
    main()
