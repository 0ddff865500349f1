"""Reports at the edge: time breakdowns, run summaries, text tables, plots and output directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from simulator.analysis.paper import ReproductionSetup
from simulator.analysis.reproduce import Reproduction
from simulator.engine import Results
from simulator.formats.storage import Footprint
from simulator.plan.binding import Plan
from simulator.report.energy import area_summary, energy_lines
from workloads.vocabulary import SFU_OPS

CATEGORY_LABELS = {"linear": "linear layers (q, k, v, attn_out, ffn1, ffn2)", "other_gemm": "other GEMMs/convs",
                   "attention_bmm": "attention BMMs", "stalls": "memory stalls",
                   "launches": "kernel launches (dispatch)"}


def breakdown(results: Results) -> pd.DataFrame:
    """Compute cycles per category (collectives: their time on the links) plus one 'stalls' row (and a
    'launches' row where kernels cost a launch); shares of the serial total time."""
    by_category = results.groupby("category", sort=False)["compute_cycles"].sum()
    order = [c for c in ("linear", "other_gemm", "attention_bmm") if c in by_category.index]
    order += sorted(c for c in by_category.index if c.startswith("sfu_"))
    order += [c for c in ("collective",) if c in by_category.index]
    cycles = [int(by_category[c]) for c in order]
    order.append("stalls")
    cycles.append(int(results["stall_cycles"].sum()))
    if results["launch_cycles"].any():
        order.append("launches")
        cycles.append(int(results["launch_cycles"].sum()))
    total = sum(cycles)
    return pd.DataFrame({"category": order, "cycles": cycles,
                         "percent_of_time": [100.0 * c / total if total else 0.0 for c in cycles]})


def run_summary(results: Results, footprint: Footprint, plan: Plan, *, model: str, config: str, hardware: str,
                baseline: Results | None, baseline_name: str | None, fp16: Results | None,
                native: Results | None, workload: dict[str, Any]) -> dict[str, Any]:
    totals = results.totals
    excluded = workload.get("excluded")
    summary = {
        "model": model, "config": config, "hardware": hardware, "workload": workload,
        "scope": f"backbone without {excluded}" if excluded else "whole model",
        "total_cycles": totals["total_cycles"], "latency_ms": totals["latency_ms"],
        "utilization": totals["utilization"], "macs": totals["macs"],
        "stall_cycles": totals["stall_cycles"], "dram_bytes": totals["dram_bytes"],
        "breakdown": breakdown(results).to_dict(orient="records"),
        "fused_sfu_ops": int((results["fused_into"] != "").sum()),
        "baseline": baseline_name,
        "speedup_vs_baseline": baseline.totals["total_cycles"] / totals["total_cycles"] if baseline is not None
        else None,
        "speedup_vs_fp16_dense": fp16.totals["total_cycles"] / totals["total_cycles"] if fp16 is not None else None,
        "native": results.hardware.sfu_precision.name if results.hardware is not None else None,
        "speedup_vs_native_dense": native.totals["total_cycles"] / totals["total_cycles"] if native is not None
        else None,
        "memory": {"weights_kept_compressed": plan.weights_compressed if plan.policy.config.sparsity.weights
                   else None, **footprint.as_dict()},
        "attention": attention_summary(results),
        "energy": totals["energy"],
        "area": area_summary(results.hardware),
        "notes": list(results.notes),
    }
    return summary


def attention_summary(results: Results) -> dict[str, Any] | None:
    """How the run's attention ran: each kernel with its blocks and the products it ran for, the attention
    products' MACs, and a fused kernel's DRAM bytes next to its closed form (None without attention)."""
    attention = results[results["kernel"] != ""]
    if attention.empty:
        return None
    products = attention[attention["unit"] == "array"]
    kernels = (products.groupby(["kernel", "block_q", "block_k", "key_chunks"], sort=True).size()
               .reset_index(name="products"))
    fused = attention[attention["kernel"] == "fused"]
    return {
        "kernels": [{key: (int(value) if key != "kernel" else value) for key, value in row.items()}
                    for row in kernels.to_dict(orient="records")],
        "macs": int(products["macs"].sum()),
        "fused_dram_bytes": int(fused["dram_bytes"].sum()),
        "fused_closed_form_dram_bytes": int(fused["closed_form_dram_bytes"].sum()),
    }


def percent(fraction: float) -> str:
    """A fraction as a percentage with three significant digits, so small ones do not print as 0.0%."""
    return f"{100 * fraction:.3g}%"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}x"


def format_run(summary: dict[str, Any]) -> str:
    lines = [
        f"{summary['model']} under {summary['config']} on {summary['hardware']} "
        f"({', '.join(f'{k}={v}' for k, v in summary['workload'].items())}); scope: {summary['scope']}",
        f"  total: {summary['total_cycles']:,} cycles = {summary['latency_ms']:.4g} ms; "
        f"array utilization {percent(summary['utilization'])}; DRAM {summary['dram_bytes'] / 2**20:.4g} MiB",
        f"  speedup vs dense baseline ({summary['baseline'] or 'none'}): {_ratio(summary['speedup_vs_baseline'])}; "
        f"vs dense FP16: {_ratio(summary['speedup_vs_fp16_dense'])}; "
        f"vs dense native ({summary['native']}): {_ratio(summary['speedup_vs_native_dense'])}",
        *([f"  {summary['silicon']}"] if summary.get("silicon") else []),
        "",
        f"  {'time breakdown':<46} {'cycles':>14} {'% of time':>10}",
    ]
    for row in summary["breakdown"]:
        if row["cycles"] == 0 and row["category"].startswith("sfu_"):
            continue  # all of its work was fused into a neighbouring SFU pass
        label = CATEGORY_LABELS.get(row["category"], row["category"].replace("sfu_", "SFU: "))
        lines.append(f"  {label:<46} {row['cycles']:>14,} {row['percent_of_time']:>9.1f}%")
    if summary["fused_sfu_ops"]:
        lines.append(f"  ({summary['fused_sfu_ops']} element-wise SFU ops ran inside a neighbouring softmax, "
                     "norm or activation pass)")
    memory = summary["memory"]
    lines += ["", f"  {'weight memory':<22} {'params':>13} {'MiB':>10} {'vs FP32':>9} {'vs FP16':>9} {'vs dense':>9}"]
    for label, entry in [("pruned linear weights", memory["pruned_linear"]), ("whole model", memory["total"])]:
        lines.append(f"  {label:<22} {entry['params']:>13,} {entry['mib']:>10.2f} "
                     f"{entry['compression_vs_fp32']:>8.3f}x {entry['compression_vs_fp16']:>8.3f}x "
                     f"{entry['compression_vs_dense']:>8.3f}x")
    if memory["weights_kept_compressed"] is False:
        lines.append(f"  pruned weights kept dense: {summary['hardware']} computes them dense and has no "
                     "decompressor, so they are stored and streamed dense")
    lines.append(f"  scale factors: {memory['total']['scale_bits'] / 8 / 2**20:.3f} MiB more "
                 f"({memory['total']['compression_vs_fp32_with_scales']:.3f}x vs FP32 with them)")
    lines += ["", *energy_lines(summary["energy"], summary["area"])]
    lines += [f"  note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def format_memory(footprint: Footprint) -> str:
    data = footprint.as_dict()
    header = (f"{'group':<16} {'params':>13} {'bits':>14} {'MiB':>9} {'scale MiB':>10} "
              f"{'bits/param':>10} {'vs FP32':>9} {'vs FP16':>9} {'vs dense':>9}")
    lines = [f"{footprint.model} under {footprint.config}: parameter storage", header]

    def line(label: str, entry: dict[str, Any]) -> str:
        return (f"{label:<16} {entry['params']:>13,} {entry['bits']:>14,} {entry['mib']:>9.2f} "
                f"{entry['scale_bits'] / 8 / 2**20:>10.3f} {entry['bits_per_param']:>10.5f} "
                f"{entry['compression_vs_fp32']:>8.3f}x "
                f"{entry['compression_vs_fp16']:>8.3f}x {entry['compression_vs_dense']:>8.3f}x")

    lines += [line(group, entry) for group, entry in data["groups"].items()]
    lines.append(line("total", data["total"]))
    lines.append(line("pruned linear*", data["pruned_linear"]))
    lines.append("* weight matrices of q, k, v, attn_out, ffn1, ffn2 (biases excluded); bits/param includes "
                 "scale factors, ratios exclude them")
    return "\n".join(lines)


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


# --- plots ----------------------------------------------------------------------------------------

def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# One order and one colour per category in every plot: the array's work first, then the SFU op types,
# stalls last (black and hatched, so that no SFU colour is mistaken for it).
CATEGORY_ORDER = ("linear", "other_gemm", "attention_bmm", *(f"sfu_{op}" for op in SFU_OPS), "stalls", "launches")


CATEGORY_COLOURS = {  # related work in related hues (array: blues; norms: purples; conversions: oranges)
    "linear": "#1f77b4", "other_gemm": "#aec7e8", "attention_bmm": "#17becf",
    "sfu_softmax": "#d62728", "sfu_layernorm": "#9467bd", "sfu_groupnorm": "#c5b0d5", "sfu_gelu": "#2ca02c",
    "sfu_relu": "#98df8a", "sfu_tanh": "#bcbd22", "sfu_quantize": "#ff7f0e", "sfu_dequantize": "#ffbb78",
    "sfu_bias": "#8c564b", "sfu_add": "#e377c2", "sfu_mul": "#f7b6d2", "sfu_embedding": "#7f7f7f",
    "sfu_concat": "#c7c7c7", "sfu_mask_embed": "#dbdb8d", "sfu_rmsnorm": "#6a3d9a", "sfu_silu": "#006d2c",
    "sfu_rope": "#fdd0a2", "sfu_rope_table": "#a6761d", "sfu_topk": "#e6ab02", "sfu_absmax": "#a63603",
    "sfu_nm_select": "#7a0177", "launches": "#525252",
}


def category_style(category: str) -> dict[str, Any]:
    if category == "stalls":
        return {"color": "black", "hatch": "///", "edgecolor": "white"}
    return {"color": CATEGORY_COLOURS[category]}


def legend_below(fig: Any, axes: Any, columns: int) -> None:
    """One legend for the figure, under the panels, where it covers no data."""
    handles: dict[str, Any] = {}
    names: dict[str, Any] = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(name, handle)
            names[name] = name
    rows = -(-len(handles) // columns)
    fig.legend(list(handles.values()), list(names), fontsize=8, loc="lower center", ncol=columns, frameon=False)
    fig.tight_layout(rect=(0, min(0.45, (0.3 + 0.17 * rows) / fig.get_figheight()), 1, 1))


def save_figure(fig: Any, plt: Any, path_stem: Path) -> None:
    for suffix in (".png", ".svg"):
        fig.savefig(path_stem.with_suffix(suffix), dpi=120)
    plt.close(fig)


def plot_time_breakdown(panels: dict[str, dict[str, pd.DataFrame]], path_stem: Path, title: str) -> None:
    """Stacked bars per panel (e.g. one panel per model): one bar per run, segments = categories."""
    plt = pyplot()
    present = {c for runs in panels.values() for frame in runs.values() for c in frame["category"]}
    categories = [c for c in CATEGORY_ORDER if c in present]
    bars = max(len(runs) for runs in panels.values())
    fig, axes = plt.subplots(1, len(panels), figsize=(max(7.0, 1.3 * bars * len(panels) + 2), 5.8), squeeze=False)
    for ax, (panel, runs) in zip(axes[0], panels.items(), strict=True):
        labels = list(runs)
        bottoms = [0.0] * len(labels)
        for cat in categories:
            heights = []
            for label in labels:
                frame = runs[label]
                match = frame.loc[frame["category"] == cat, "cycles"]
                heights.append(float(match.iloc[0]) / 1e6 if len(match) else 0.0)
            ax.bar(labels, heights, bottom=bottoms, label=CATEGORY_LABELS.get(cat, cat.replace("sfu_", "SFU ")),
                   **category_style(cat))
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        ax.set_title(panel)
        ax.set_xlabel("configuration")
        ax.set_ylabel("time (million cycles)")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(title)
    legend_below(fig, axes[0], columns=max(3, min(8, int(fig.get_figwidth() / 2.6))))
    save_figure(fig, plt, path_stem)


def storage_parts_mib(footprint: Footprint) -> dict[str, dict[str, float]]:
    """MiB per layer group, split into weight values, metadata (indices, bitmaps), scales and biases."""
    parts: dict[str, dict[str, float]] = {}
    for row in footprint.ops:
        if not row.params:
            continue
        group = parts.setdefault(row.group, {"weight values": 0.0, "metadata (indices)": 0.0,
                                             "scale factors": 0.0, "biases": 0.0})
        for name, bits in (("weight values", row.value_bits), ("metadata (indices)", row.index_bits),
                           ("scale factors", row.scale_bits), ("biases", row.bias_bits)):
            group[name] += bits / 8 / 2**20
    return parts


def plot_bars(values: dict[str, dict[str, float]], path_stem: Path, xlabel: str, ylabel: str, title: str,
              stacked: bool = False) -> None:
    """Bars: outer keys on the x axis, inner keys as series, side by side (e.g. paper vs accelsim) or
    stacked (parts of a whole); the legend sits under the axes."""
    plt = pyplot()
    labels = list(values)
    series = list(next(iter(values.values())))
    width = 0.8 if stacked else 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 5.2))
    hatches = ["", "//", "..", "xx", "\\\\", "oo"]
    bottoms = [0.0] * len(labels)
    for index, name in enumerate(series):
        heights = [values[label][name] for label in labels]
        xs = list(range(len(labels))) if stacked else [
            i + (index - (len(series) - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, heights, width, bottom=bottoms if stacked else None, label=name,
               hatch=hatches[index % len(hatches)], edgecolor="white")
        if stacked:
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    legend_below(fig, [ax], columns=min(4, len(series)))
    save_figure(fig, plt, path_stem)


# --- the paper reproduction -----------------------------------------------------------------------

def reproduction_table(rows: list[dict[str, Any]], hardware: str, setup: ReproductionSetup) -> str:
    models = ", ".join(f"{m} ({', '.join(f'{k}={v}' for k, v in knobs.model_dump(exclude_none=True).items())})"
                       for m, knobs in setup.models.items())
    lines = [f"Paper figures (seed 000, section 2.4) on {hardware}; backbones: {models}",
             f"{'figure':<58} {'role':<9} {'paper':>8} {'accelsim':>9} {'rel. error':>10} {'tolerance':>10}  "
             "error / tolerance"]
    lines += [f"{r['key']:<58} {r['role']:<9} {r['paper']:>8.3f} {r['accelsim']:>9.3f} {100 * r['rel_error']:>9.2f}% "
              f"{r['tolerance'] + (' abs' if r['tolerance_kind'] == 'abs' else ' rel'):>10}  "
              f"{r['error_in_tolerances']:.2f} {'within' if r['within_tolerance'] else 'OUTSIDE'}" for r in rows]
    counts = {role: sum(r["role"] == role for r in rows) for role in ("predicted", "fitted", "identity")}
    lines.append(f"roles: {counts['predicted']} predicted (never fitted), {counts['fitted']} fitted by "
                 f"calibration/fit_rapid_like.py, {counts['identity']} identities of storage arithmetic")
    return "\n".join(lines)


def write_reproduction(directory: Path, rows: list[dict[str, Any]], table: str, reproduction: Reproduction,
                       hardware: str) -> None:
    """reproduction.md, figures.csv, time_breakdown.csv and the plots, into ``directory``."""
    pd.DataFrame(rows).to_csv(directory / "figures.csv", index=False)
    panels: dict[str, dict[str, pd.DataFrame]] = {}
    for (model, config), results in reproduction.runs.items():
        panels.setdefault(model, {})[config] = breakdown(results)
    records = [{"model": model, "config": config, **row} for model, runs in panels.items()
               for config, frame in runs.items() for row in frame.to_dict(orient="records")]
    pd.DataFrame(records).to_csv(directory / "time_breakdown.csv", index=False)
    plot_time_breakdown(panels, directory / "time_breakdown", f"time by category on {hardware}")

    def paper_vs_ours(section: str) -> dict[str, dict[str, float]]:
        return {r["key"].split(".", 1)[1]: {"paper": r["paper"], "accelsim": r["accelsim"]} for r in rows
                if r["key"].startswith(section)}

    plot_bars(paper_vs_ours("sparse_over_dense_speedup"), directory / "speedups", "precision.model",
              "sparse over dense speedup (x)", "2:4 sparse speedup: paper vs accelsim")
    plot_bars(paper_vs_ours("memory_capacity_savings"), directory / "memory_savings", "comparison",
              "memory saving (x, bits over bits)", "pruned-layer weight memory savings: paper vs accelsim")
    (directory / "reproduction.md").write_text(
        "# Reproduction of the paper's hardware figures\n\n```\n" + table + "\n```\n\n"
        "Files: figures.csv (paper vs accelsim), time_breakdown.csv/.png/.svg (cycles per category for "
        "every model x config), speedups.png/.svg, memory_savings.png/.svg.\n")


STEP_SERIES = (("linear_cycles", "linear"), ("attention_bmm_cycles", "attention_bmm"),
               ("other_gemm_cycles", "other_gemm"), ("sfu_compute_cycles", "sfu"), ("stall_cycles", "stalls"))


def plot_steps(steps: pd.DataFrame, clock_mhz: float, path_stem: Path, title: str) -> None:
    """Decode-step latency against the tokens in the KV cache, stacked by category (compute of the
    linear layers, attention BMMs, other GEMMs and the SFU, then stalls); the line is the step's time."""
    plt = pyplot()
    fig, axes = plt.subplots(figsize=(9.5, 4.5))
    per_ms = clock_mhz * 1e3
    colours = {"sfu": CATEGORY_COLOURS["sfu_softmax"], "stalls": "black"}
    if len(steps):
        axes.stackplot(steps["cache_tokens"], *(steps[column] / per_ms for column, _ in STEP_SERIES),
                       labels=[name.replace("_", " ") for _, name in STEP_SERIES],
                       colors=[colours.get(name) or CATEGORY_COLOURS[name] for _, name in STEP_SERIES], alpha=0.85)
        axes.plot(steps["cache_tokens"], steps["latency_ms"], color="grey", linewidth=1, label="step latency")
    axes.set_xlabel("tokens in the KV cache before the step")
    axes.set_ylabel("ms per decode step")
    axes.set_ylim(bottom=0)
    axes.set_title(title, fontsize=10)
    # beside the axes, not over the stacked areas (they fill the plot from the bottom up)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    save_figure(fig, plt, path_stem)
