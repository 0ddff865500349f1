"""Run inside ZigZag's own venv (see zigzag_peer.py): time dense GEMMs on a ws array, print JSON.

Reads {"cases": [[M, K, N, rows, cols], ...]} on stdin and writes, per case, ZigZag 3.9.1's ideal
temporal cycles and systolic fill/drain term from its cost-model evaluation. The array is weight
stationary: D1 (rows) unrolls the reduction K, D2 (cols) the outputs N, and the temporal order is
fixed to accelsim's ws schedule (M innermost, then K folds, then N folds). ZigZag names the GEMM
dimensions B (our M), C (our K) and K (our N). This file imports only ZigZag and PyYAML.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import tempfile
from pathlib import Path


def _port(name: str, kind: str, bits: int, allocation: list[str]) -> dict:
    return {"name": name, "type": kind, "bandwidth_min": bits, "bandwidth_max": bits, "allocation": allocation}


def _register(operand: str, bits: int, ports: list[tuple[str, str, str]]) -> dict:
    return {"size": bits, "r_cost": 0.0, "w_cost": 0.0, "area": 0, "latency": 1, "operands": [operand],
            "served_dimensions": [], "ports": [_port(name, kind, bits, [alloc]) for name, kind, alloc in ports]}


def hardware(rows: int, cols: int, weight_bits: int = 8, psum_bits: int = 16) -> dict:
    """A ws array: a weight and a partial-sum register per PE, one buffer for I1/O, DRAM for all."""
    wide = 2**20
    return {
        "name": f"accelsim_ws_{rows}x{cols}",
        "memories": {  # lowest level first: ZigZag reads the hierarchy in this order
            "weight_reg": _register("I2", weight_bits, [("r_port_1", "read", "I2, tl"),
                                                        ("w_port_1", "write", "I2, fh")]),
            "psum_reg": _register("O", psum_bits, [("r_port_1", "read", "O, tl"), ("r_port_2", "read", "O, th"),
                                                   ("w_port_1", "write", "O, fh"), ("w_port_2", "write", "O, fl")]),
            "buffer": {"size": 2**40, "r_cost": 1.0, "w_cost": 1.0, "area": 0, "latency": 1,
                       "operands": ["I1", "O"], "served_dimensions": ["D1", "D2"],
                       "ports": [{**_port("r_port_1", "read", wide, ["I1, tl", "O, tl", "O, th"]),
                                  "bandwidth_min": 64},
                                 {**_port("w_port_1", "write", wide, ["I1, fh", "O, fh", "O, fl"]),
                                  "bandwidth_min": 64}]},
            "dram": {"size": 2**45, "r_cost": 100.0, "w_cost": 100.0, "area": 0, "latency": 1,
                     "operands": ["I1", "I2", "O"], "served_dimensions": ["D1", "D2"],
                     "ports": [{**_port("rw_port_1", "read_write", wide,
                                        ["I1, fh", "I1, tl", "I2, fh", "I2, tl", "O, fh", "O, tl", "O, fl", "O, th"]),
                                "bandwidth_min": 64}]},
        },
        "operational_array": {"unit_energy": 0.04, "unit_area": 1, "dimensions": ["D1", "D2"],
                              "sizes": [rows, cols], "systolic_dimensions": ["D1", "D2"]},
    }


def run_case(workdir: Path, m: int, k: int, n: int, rows: int, cols: int) -> dict:
    import yaml
    from zigzag.api import get_hardware_performance_zigzag

    accelerator, mapping = workdir / "accelerator.yaml", workdir / "mapping.yaml"
    accelerator.write_text(yaml.safe_dump(hardware(rows, cols), sort_keys=False))
    mapping.write_text(yaml.safe_dump([{
        "name": "default",
        "spatial_mapping": {"D1": [f"C, {rows}"], "D2": [f"K, {cols}"]},
        # innermost first; a loop of size 1 is left out (ZigZag 3.9.1's completeness check fails on one)
        "temporal_ordering": [[dim, size] for dim, size in (("B", m), ("C", -(-k // rows)), ("K", -(-n // cols)))
                              if size > 1],
        "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"},
    }], sort_keys=False))
    workload = [{"id": 0, "name": "gemm", "operator_type": "Gemm", "equation": "O[b][k]+=I[b][c]*W[c][k]",
                 "loop_dims": ["B", "C", "K"], "loop_sizes": [m, k, n],
                 "operand_precision": {"I": 8, "W": 8, "O": 16, "O_final": 16},
                 "operand_source": {"I": 0, "W": 0}}]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        _, _, evaluations = get_hardware_performance_zigzag(
            workload, str(accelerator), str(mapping), opt="latency", dump_folder=str(workdir / "out"),
            loma_show_progress_bar=False)
    layer = evaluations[0][1][0][0]  # the GEMM's own cost-model evaluation
    return {"ideal_temporal_cycle": int(layer.ideal_temporal_cycle),
            "systolic_drain_cycle": int(layer.systolic_drain_cycle),
            "latency_total2": float(layer.latency_total2),
            "temporal_mapping": str(layer.temporal_mapping)}


def main() -> None:
    logging.disable(logging.CRITICAL)
    cases = json.load(sys.stdin)["cases"]
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_case(Path(tmp), *case) for case in cases]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
