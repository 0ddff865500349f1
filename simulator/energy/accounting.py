"""Energy of a run: each step's action counts times the hardware's per-action costs, plus leakage (pure).

Dynamic energy per step, in pJ (one column each in ops.csv):

- ``mac_pj``: kept MACs at the compute format's MAC energy; under ``sparse.mode: gate`` every zero MAC
  the array still steps through costs the gated fraction of a MAC; compressed weights add their index
  reads (index bits x rows streamed past them); the hardware's optional capabilities add their uses
  (skip selections, in-PE dequantizations, decompressed weights: see energy/capabilities.py).
- ``idle_pj``: the op's idle MAC slots (compute cycles x PEs x MACs per PE, less the MACs issued:
  under-filled folds, fill and drain, arrays the split leaves unused), clock-gated at the same fraction.
- ``register_pj``: PE registers, per bit written: each weight load (stored bits per weight: values
  and indices), each activation hop (compute width) and each partial-sum update (accumulator width).
- ``ifmap_pj``, ``filter_pj``, ``ofmap_pj``: buffer bytes read and written at the buffer's per-byte cost.
- ``dram_pj``: DRAM bytes (bit-exact compressed traffic) at the technology's cost.
- ``vector_pj``: vector-unit elements x cycles per element x one lane-cycle (fused steps included: the
  work is done inside another pass, which saves time, not energy).
- ``link_pj``: the bits a collective sends from this chip over the system's links, at the links' pJ/bit.

Static energy: the chip's leakage (PEs, vector unit, buffers) times the run's latency.

Accounting ``zigzag`` counts what ZigZag 3.9.1 counts where it differs (docs/energy.md): a partial sum is read
twice per MAC (by its MAC and out to the next level), the finished output is read from the ofmap
buffer once more at its own width, and idle MAC slots cost nothing.
"""

from __future__ import annotations

import math
from typing import Any

from simulator.energy.action_costs import ActionCosts
from simulator.engine.records import StepRecord
from simulator.formats.precision import parse_precision
from simulator.spec.hardware import Hardware

ACCOUNTINGS = ("default", "zigzag")
COMPONENT_OF_COLUMN = {"mac_pj": "macs", "idle_pj": "idle_pe_slots", "register_pj": "registers",
                       "ifmap_pj": "ifmap_buffer", "filter_pj": "filter_buffer", "ofmap_pj": "ofmap_buffer",
                       "dram_pj": "dram", "vector_pj": "vector_unit", "link_pj": "links"}


def _weight_bits_per_load(record: StepRecord, compute_bits: int) -> float:
    """Bits a weight load brings into a PE: the stored bits per weight of a GEMM (values and indices, so
    compression shows; scales apply to finished outputs, outside the PEs), the compute width for a BMM's
    second operand."""
    weights = record.batch * record.k * record.n
    stored = record.weight_bits  # values and their metadata (indices, bitmaps), not scales
    streamed_stored = record.kind != "bmm" and not record.dequantized
    return stored / weights if streamed_stored and stored and weights else compute_bits


def step_energy(record: StepRecord, hardware: Hardware, costs: ActionCosts, accounting: str = "default",
                link_pj_per_bit: float = 0.0) -> dict[str, float]:
    """The energy columns of one step's record (see the module docstring); ``link_pj_per_bit`` prices the
    bits a collective sends (the system's links)."""
    reads, writes = costs.buffer_read_pj_per_byte, costs.buffer_write_pj_per_byte
    ifmap = record.ifmap_read_bytes * reads["ifmap"] + record.ifmap_write_bytes * writes["ifmap"]
    filter_ = record.filter_read_bytes * reads["filter"] + record.filter_write_bytes * writes["filter"]
    ofmap = record.ofmap_read_bytes * reads["ofmap"] + record.ofmap_write_bytes * writes["ofmap"]
    dram = record.dram_bytes * costs.dram_pj_per_byte
    mac = idle = register = vector = 0.0
    if record.unit == "array":
        compute = parse_precision(record.compute_precision)
        per_mac = costs.mac_pj[compute.name]
        gated = costs.gated_fraction * per_mac
        kept = record.macs
        issued = record.batch * record.m * record.k * record.n if hardware.sparse.mode == "gate" else kept
        slots = record.compute_cycles * hardware.pes * record.macs_per_pe
        selection = record.index_bits * record.m * costs.register_bit_pj
        extras = costs.capabilities
        capabilities = (record.skip_selects * extras.skip_select_pj[compute.name]
                        + record.pe_dequantized_loads * extras.dequantize_pj
                        + record.decompressed_weights * extras.decompress_pj[compute.name])
        mac = kept * per_mac + (issued - kept) * gated + selection + capabilities
        idle = 0.0 if accounting == "zigzag" else max(0, slots - issued) * gated
        psum_reads = 2 if accounting == "zigzag" else 1
        bits = (record.array_weight_loads * _weight_bits_per_load(record, compute.bits)
                + record.array_activation_hops * compute.bits
                + record.array_psum_updates * hardware.accumulator_bits * psum_reads)
        register = bits * costs.register_bit_pj
    elif record.unit == "sfu":
        vector = record.elements * hardware.sfu.cycles_per_element.get(record.role, 0.0) * costs.vector_lane_pj
    link = record.link_bytes * 8 * link_pj_per_bit
    return {"mac_pj": mac, "idle_pj": idle, "register_pj": register, "ifmap_pj": ifmap, "filter_pj": filter_,
            "ofmap_pj": ofmap, "dram_pj": dram, "vector_pj": vector, "link_pj": link,
            "energy_pj": mac + idle + register + ifmap + filter_ + ofmap + dram + vector + link}


def static_mw(costs: ActionCosts) -> float:
    return sum(costs.static_mw.values())


def leakage_mw(costs: ActionCosts | None) -> float:
    """A chip's leakage (mW); NaN without an energy model (energy is then not modelled)."""
    return math.nan if costs is None else static_mw(costs)


def leakage_pj(costs: ActionCosts, latency_ms: float) -> float:
    """Leakage over ``latency_ms``: mW x ms = uJ = 1e6 pJ."""
    return static_mw(costs) * latency_ms * 1e6


def energy_summary(sums: dict[str, float], macs: int, latency_ms: float, costs: ActionCosts,
                   dense_equivalent_macs: int) -> dict[str, Any]:
    """The run's energy block from its per-column sums: total and by component (pJ), leakage, TOPS/W
    (2 ops per useful MAC over the total energy), effective TOPS/W (2 ops per MAC of the products as
    written, skipped zeros included: what a dense chip would have to do for the same result) and the
    energy-delay product (pJ x s)."""
    by_component = {component: float(sums[column]) for column, component in COMPONENT_OF_COLUMN.items()}
    by_component["leakage"] = leakage_pj(costs, latency_ms)
    total = sum(by_component.values())
    return {
        "total_pj": total,
        "total_uj": total / 1e6,
        "dynamic_pj": float(sums["energy_pj"]),
        "by_component": by_component,
        "static_mw": static_mw(costs),
        "tops_per_w": 2 * macs / total if total else 0.0,
        "effective_tops_per_w": 2 * dense_equivalent_macs / total if total else 0.0,
        "edp_pj_s": total * latency_ms / 1e3,
    }


def system_energy(chip: dict[str, Any], chips: int) -> dict[str, Any]:
    """The energy block of ``chips`` chips that each spend ``chip`` (a tensor-parallel split: every chip runs
    the same steps, its links' sends included): energies, power and the energy-delay product add up; TOPS/W
    stays."""
    if chips == 1:
        return chip
    added = ("total_pj", "total_uj", "dynamic_pj", "static_mw", "edp_pj_s")
    return {**chip, **{key: chip[key] * chips for key in added},
            "by_component": {name: pj * chips for name, pj in chip["by_component"].items()}}
