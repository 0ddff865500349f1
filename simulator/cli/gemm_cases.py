"""`accelsim gemm`: one product's compute timing as a JSON object, from options or a CSV of cases.

The command models a generic array with no memory system (its JSON says so): its PEs do one MAC per
cycle at 8 bits or wider and pack narrower integers along K (int4: 2, int2: 4). Hardware presets
(configs/hardware) and `accelsim run` model real machines.
"""

from __future__ import annotations

from typing import Any

from workloads.errors import InputError
from workloads.ops import MAX_SIZE

GENERIC_MACS_PER_PE = {"fp32": 1, "fp16": 1, "bf16": 1, "int8": 1, "int4": 2, "int2": 4}


def gemm_result(m: int, k: int, n: int, rows: int, cols: int, dataflow: str, precision: str,
                sparsity: str | None, timing: str) -> dict[str, Any]:
    """One product's timing as the JSON object `accelsim gemm` prints."""
    from simulator.engine.timing import check_dataflow, check_sizes, check_timing, gemm_cycles
    from simulator.formats.sparsity import SparsityPattern

    check_sizes(m=m, k=k, n=n, rows=rows, cols=cols)
    for name, value in (("m", m), ("k", k), ("n", n), ("rows", rows), ("cols", cols)):
        if value > MAX_SIZE:
            raise InputError(f"{name} = {value} exceeds the largest accepted size {MAX_SIZE} (31 bits)")
    check_dataflow(dataflow)
    if precision not in GENERIC_MACS_PER_PE:
        raise InputError(f"unknown precision {precision!r}; choose from {', '.join(GENERIC_MACS_PER_PE)}")
    check_timing(timing)
    pattern = SparsityPattern.parse(sparsity) if sparsity else None
    pack = GENERIC_MACS_PER_PE[precision]
    result = gemm_cycles(m, k, n, rows, cols, dataflow, pack=pack, sparsity=pattern, timing=timing)
    return {
        "m": m, "k": k, "n": n, "rows": rows, "cols": cols, "dataflow": dataflow, "precision": precision,
        "sparsity": str(pattern) if pattern else "dense", "timing": timing, "macs_per_pe_per_cycle": pack,
        "compute_cycles": result.compute_cycles,
        # No memory hierarchy is modelled by this command yet: the timing is compute only.
        "stall_cycles": 0, "memory_model": "none (compute-only timing)",
        "total_cycles": result.compute_cycles, "folds": result.folds,
        "reduction_depth": result.reduction_depth, "macs": result.macs,
        "busy_cycles": result.busy_cycles,
        "utilization": round(result.utilization(rows, cols, pack), 6),
    }


def read_cases(path: str) -> list[dict[str, Any]]:
    from simulator.cli.csv_files import read_csv

    required = ("m", "k", "n", "rows", "cols", "dataflow")
    header, records = read_csv(path)
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    unknown = [c for c in header if c not in (*required, "precision", "sparsity", "timing")]
    if unknown:
        raise InputError(f"{path}: unknown column(s) {', '.join(unknown)}")
    rows = []
    for line, record in enumerate(records, start=2):
        try:
            sizes = {c: int(record[c]) for c in ("m", "k", "n", "rows", "cols")}
        except (TypeError, ValueError):
            raise InputError(f"{path}: line {line}: m, k, n, rows, cols must be integers") from None
        rows.append({**sizes, "dataflow": record["dataflow"],
                     "precision": record.get("precision") or "int8",
                     "sparsity": record.get("sparsity") or None,
                     "timing": record.get("timing") or "default"})
    return rows
