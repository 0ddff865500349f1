"""Run inside ZigZag's own venv (see zigzag_peer.py): time and price dense GEMMs on a ws array, print JSON.

Reads {"cases": [[M, K, N, rows, cols], ...]} on stdin and writes, per case, ZigZag 3.9.1's ideal
temporal cycles and systolic fill/drain term from its cost-model evaluation; or reads
{"energy_cases": [[M, K, N, rows, cols, costs], ...]} and writes its access counts per level and its
energies. The array is weight
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


def _evaluate(workdir: Path, m: int, k: int, n: int, rows: int, cols: int, accelerator: dict,
              bits: dict[str, int], opt: str):
    """ZigZag's cost-model evaluation of one GEMM on ``accelerator`` with the ws mapping fixed: D1 (rows)
    unrolls the reduction, D2 (cols) the outputs, M innermost, then K folds, then N folds."""
    import yaml
    from zigzag.api import get_hardware_performance_zigzag

    accelerator_path, mapping = workdir / "accelerator.yaml", workdir / "mapping.yaml"
    accelerator_path.write_text(yaml.safe_dump(accelerator, sort_keys=False))
    mapping.write_text(yaml.safe_dump([{
        "name": "default",
        "spatial_mapping": {"D1": [f"C, {rows}"], "D2": [f"K, {cols}"]},
        # innermost first; a loop of size 1 is left out (ZigZag 3.9.1's completeness check fails on one)
        "temporal_ordering": [[dim, size] for dim, size in (("B", m), ("C", -(-k // rows)), ("K", -(-n // cols)))
                              if size > 1],
        "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"},
    }], sort_keys=False))
    workload = [{"id": 0, "name": "gemm", "operator_type": "Gemm", "equation": "O[b][k]+=I[b][c]*W[c][k]",
                 "loop_dims": ["B", "C", "K"], "loop_sizes": [m, k, n], "operand_precision": bits,
                 "operand_source": {"I": 0, "W": 0}}]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        _, _, evaluations = get_hardware_performance_zigzag(
            workload, str(accelerator_path), str(mapping), opt=opt, dump_folder=str(workdir / "out"),
            loma_show_progress_bar=False)
    return evaluations[0][1][0][0]  # the GEMM's own cost-model evaluation


def run_case(workdir: Path, m: int, k: int, n: int, rows: int, cols: int) -> dict:
    layer = _evaluate(workdir, m, k, n, rows, cols, hardware(rows, cols),
                      {"I": 8, "W": 8, "O": 16, "O_final": 16}, "latency")
    return {"ideal_temporal_cycle": int(layer.ideal_temporal_cycle),
            "systolic_drain_cycle": int(layer.systolic_drain_cycle),
            "latency_total2": float(layer.latency_total2),
            "temporal_mapping": str(layer.temporal_mapping)}


def _memory(operand: str, bits: int, served: list[str], size: int, read_cost: float, write_cost: float) -> dict:
    """One level holding one operand, with a read and a write port of ``bits`` (one access = one word)."""
    reads = ["O, tl", "O, th"] if operand == "O" else [f"{operand}, tl"]
    writes = ["O, fh", "O, fl"] if operand == "O" else [f"{operand}, fh"]
    return {"size": size, "r_cost": read_cost, "w_cost": write_cost, "area": 0, "latency": 1, "operands": [operand],
            "served_dimensions": served,
            "ports": [_port("r_port_1", "read", bits, reads), _port("w_port_1", "write", bits, writes)]}


def energy_hardware(rows: int, cols: int, costs: dict) -> dict:
    """A ws array whose levels mirror accelsim's: per-PE weight, activation and partial-sum registers
    (one access = one element), ifmap/filter/ofmap buffers and DRAM (one access = one byte), with the
    per-access energies in ``costs``."""
    bits, register, buffers = costs["bits"], costs["register_bit_pj"], costs["buffers"]
    every = ["I1, fh", "I1, tl", "I2, fh", "I2, tl", "O, fh", "O, tl", "O, fl", "O, th"]
    return {
        "name": f"accelsim_ws_energy_{rows}x{cols}",
        "memories": {  # lowest level first
            "weight_reg": _memory("I2", bits["W"], [], bits["W"], bits["W"] * register, 0.0),
            "act_reg": _memory("I1", bits["I"], [], bits["I"], bits["I"] * register, 0.0),
            "psum_reg": _memory("O", bits["O"], [], bits["O"], bits["O"] * register, 0.0),
            "filter_buffer": _memory("I2", 8, ["D1", "D2"], 2**40, *buffers["filter"]),
            "ifmap_buffer": _memory("I1", 8, ["D1", "D2"], 2**40, *buffers["ifmap"]),
            "ofmap_buffer": _memory("O", 8, ["D1", "D2"], 2**40, *buffers["ofmap"]),
            "dram": {"size": 2**45, "r_cost": costs["dram"], "w_cost": costs["dram"], "area": 0, "latency": 1,
                     "operands": ["I1", "I2", "O"], "served_dimensions": ["D1", "D2"],
                     "ports": [_port("rw_port_1", "read_write", 8, every)]},
        },
        "operational_array": {"unit_energy": costs["mac_pj"], "unit_area": 1, "dimensions": ["D1", "D2"],
                              "sizes": [rows, cols], "systolic_dimensions": ["D1", "D2"]},
    }


def run_energy_case(workdir: Path, m: int, k: int, n: int, rows: int, cols: int, costs: dict) -> dict:
    """ZigZag's access counts per operand, level and direction, and its energies, for one dense GEMM."""
    layer = _evaluate(workdir, m, k, n, rows, cols, energy_hardware(rows, cols, costs), costs["bits"], "energy")
    levels = {"I": ["act_reg", "ifmap_buffer", "dram"], "W": ["weight_reg", "filter_buffer", "dram"],
              "O": ["psum_reg", "ofmap_buffer", "dram"]}
    accesses = {}
    for operand, per_level in layer.memory_word_access.items():
        for level, counts in zip(levels[str(operand)], per_level, strict=True):
            accesses[f"{operand}.{level}"] = {str(direction).split(".")[-1].lower(): int(value)
                                              for direction, value in counts.data.items()}
    return {"accesses": accesses, "mac_energy": float(layer.mac_energy), "mem_energy": float(layer.mem_energy),
            "energy_total": float(layer.energy_total), "temporal_mapping": str(layer.temporal_mapping)}


def main() -> None:
    logging.disable(logging.CRITICAL)
    request = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as tmp:
        if "energy_cases" in request:
            results = [run_energy_case(Path(tmp), *case) for case in request["energy_cases"]]
        else:
            results = [run_case(Path(tmp), *case) for case in request["cases"]]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
