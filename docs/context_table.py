"""Prints the table of docs/engine.md ("Attention kernels"): Llama-3-8B int8 prefill on tpu_v5e_like
against context length, both kernels (tests/engine/test_attention_docs.py keeps the page equal to it).

Run: .venv/bin/python docs/context_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.engine import simulate
from simulator.spec.hardware import load_hardware
from simulator.spec.run_config import policy_from_dict
from workloads.models import Workload, load_model

CONTEXTS = (1024, 2048, 4096, 8192)


def table() -> str:
    hardware, spec = load_hardware("tpu_v5e_like"), load_model("llama-3-8b")
    lines = ["| tokens | kernel | blocks | prefill ms | DRAM GB | attention DRAM GB | attention MACs (T) |",
             "|---:|---|---|---:|---:|---:|---:|"]
    for tokens in CONTEXTS:
        trace = spec.trace(Workload(tokens=tokens, head="none"))
        for kernel in ("materialized", "fused"):
            policy = policy_from_dict({"name": "int8", "hardware": "tpu_v5e_like", "precision": {"default": "int8"},
                                       "attention": {"kernel": kernel}})
            results = simulate(trace, hardware, policy)
            attention = results[results["kernel"] != ""]
            qk = attention[attention["role"] == "bmm_qk"].iloc[0]
            blocks = f"{qk.block_q} x {qk.block_k}" if kernel == "fused" else "-"
            products = attention[attention["unit"] == "array"]
            lines.append(f"| {tokens:,} | {kernel} | {blocks} | {results.totals['latency_ms']:.1f} | "
                         f"{results.totals['dram_bytes'] / 1e9:.2f} | {attention['dram_bytes'].sum() / 1e9:.2f} | "
                         f"{products['macs'].sum() / 1e12:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
