"""Energy and area at the edge: the run's energy block, `accelsim area`, and the energy plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulator.energy.action_costs import action_costs
from simulator.spec.hardware import Hardware

COMPONENT_LABELS = {
    "macs": "MACs (incl. gated zeros, indices, skip/dequant logic)", "idle_pe_slots": "idle PE slots (clock-gated)",
    "registers": "PE registers", "ifmap_buffer": "ifmap buffer",
    "filter_buffer": "filter buffer", "ofmap_buffer": "ofmap (accumulator) buffer", "dram": "DRAM",
    "vector_unit": "vector unit", "leakage": "leakage (static)",
    "pes": "PEs", "decompressor": "weight decompressor", "uncore": "uncore (clock, control, I/O)", "total": "total",
}


def joules(pj: float) -> str:
    """An energy in pJ printed in the unit that keeps it readable (pJ, nJ, uJ, mJ or J)."""
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return f"{pj / scale:.4g} {unit}"
    return f"{pj:.4g} pJ"


def area_summary(hardware: Hardware) -> dict[str, Any] | None:
    """mm2 by component and in total (None when the hardware has no energy section)."""
    if hardware.energy is None:
        return None
    costs = action_costs(hardware)
    by_component = dict(costs.area_mm2)
    return {"by_component_mm2": by_component, "total_mm2": sum(by_component.values()),
            "pe_um2": costs.pe_area_um2, "node_nm": hardware.energy.node_nm, "static_mw": costs.static_mw}


def format_area(hardware: Hardware, area: dict[str, Any]) -> str:
    energy = hardware.energy
    assert energy is not None
    lines = [f"{hardware.name}: area at {energy.node_nm:g} nm, {energy.vdd_v:g} V (tables: {energy.table}; "
             f"{hardware.pes:,} PEs of {area['pe_um2']:.1f} um2, {energy.sram_cell} SRAM)",
             f"  {'component':<28} {'mm2':>10} {'% of area':>10} {'static mW':>10}"]
    for name, mm2 in area["by_component_mm2"].items():
        lines.append(f"  {COMPONENT_LABELS.get(name, name):<28} {mm2:>10.4g} {100 * mm2 / area['total_mm2']:>9.1f}% "
                     f"{area['static_mw'][name]:>10.4g}")
    for name in (name for name in area["static_mw"] if name not in area["by_component_mm2"]):
        lines.append(f"  {COMPONENT_LABELS.get(name, name):<28} {'-':>10} {'-':>10} {area['static_mw'][name]:>10.4g}")
    lines.append(f"  {'total':<28} {area['total_mm2']:>10.4g} {100.0:>9.1f}% {sum(area['static_mw'].values()):>10.4g}")
    return "\n".join(lines)


def energy_lines(energy: dict[str, Any] | None, area: dict[str, Any] | None) -> list[str]:
    """The run table's energy block."""
    if energy is None:
        return ["  energy: not modelled (the hardware has no energy section)"]
    total = energy["total_pj"]
    lines = [f"  energy: {joules(total)} ({energy['tops_per_w']:.3g} TOPS/W, effective (dense-equivalent) "
             f"{energy['effective_tops_per_w']:.3g} TOPS/W, energy-delay "
             f"{energy['edp_pj_s']:.4g} pJ*s)" + (f"; area {area['total_mm2']:.4g} mm2" if area else ""),
             f"  {'energy by component':<46} {'uJ':>14} {'% of energy':>12}"]
    for name, pj in energy["by_component"].items():
        lines.append(f"  {COMPONENT_LABELS.get(name, name):<46} {pj / 1e6:>14.4g} {100 * pj / total:>11.1f}%")
    return lines


def plot_energy(by_component: dict[str, dict[str, float]], path_stem: Path, title: str) -> None:
    """Stacked bars of energy (uJ) by component, one bar per run."""
    from simulator.report.summary import plot_bars

    values = {run: {COMPONENT_LABELS.get(name, name): pj / 1e6 for name, pj in parts.items()}
              for run, parts in by_component.items()}
    plot_bars(values, path_stem, "run", "energy (uJ)", title, stacked=True)
