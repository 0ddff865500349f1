"""A serving run's report: the summary as text, the per-request and per-iteration CSVs, and the plots."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from simulator.report.energy import joules
from simulator.report.summary import pyplot, save_figure


def write_rows(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """``rows`` as CSV with ``columns`` (floats as Python writes them: the same run, the same bytes)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({column: "" if row[column] != row[column] else row[column] for column in columns})


def format_serving(summary: dict[str, Any]) -> str:
    def ms(block: dict[str, float | None]) -> str:
        if block["mean"] is None:
            return "n/a"
        return f"mean {block['mean']:.2f}, p50 {block['p50']:.2f}, p90 {block['p90']:.2f}, p99 {block['p99']:.2f} ms"

    def rate(value: float | None, unit: str) -> str:
        return "n/a" if value is None else f"{value:,.2f} {unit}"

    kv = summary["kv_cache"]
    lines = [
        f"{summary['model']} under {summary['config']} on {summary['hardware']}, {summary['scheduler']} scheduler: "
        f"{summary['requests']} request{'' if summary['requests'] == 1 else 's'}, {summary['completed']} completed, "
        f"{summary['rejected']} rejected, {_seconds(summary['duration_s'])}",
        f"  throughput      {rate(summary['throughput_tokens_per_s'], 'tokens/s')}, "
        f"{rate(summary['throughput_requests_per_s'], 'requests/s')} ({summary['iterations']:,} iterations, "
        f"busy {_percent(summary['busy_fraction'])})",
        *([f"  rejected        {_ids(summary['rejected_request_ids'])}: their generations never fit the KV cache"]
          if summary["rejected"] else []),
        f"  TTFT            {ms(summary['ttft_ms'])}",
        f"  TPOT            {ms(summary['tpot_ms'])}",
        f"  end to end      {ms(summary['e2e_ms'])}",
        f"  queueing        {ms(summary['queueing_ms'])}",
        f"  KV cache        {kv['capacity_blocks']:,} blocks of {summary['kv_block_tokens']} tokens; peak "
        f"{_percent(kv['peak_utilization'])}, mean {_percent(kv['mean_utilization'])}; "
        f"{summary['preemptions']} preemptions" + (f" ({summary['swaps']} swapped to the host)"
                                                   if summary.get("preemption") == "swap" else ""),
    ]
    if "goodput_requests_per_s" in summary:
        slo = ", ".join(f"{key} <= {value:g} ms" for key, value in summary["slo_ms"].items())
        lines.append(f"  goodput         {rate(summary['goodput_requests_per_s'], 'requests/s')} meeting {slo} "
                     f"({_percent(summary['slo_attained'])} of requests)")
    if summary.get("silicon"):
        lines.append(f"  {summary['silicon']}")
    if summary["energy_j"] is not None:
        per_token = summary["energy_per_token_j"]  # None (as the power) when nothing completed
        per_token_text = "n/a" if per_token is None else joules(per_token * 1e12)
        lines.append(f"  energy          {joules(summary['energy_j'] * 1e12)}, {per_token_text} per output token, "
                     f"mean power {rate(summary['mean_power_w'], 'W')}")
    lines += [f"  note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def _ids(request_ids: list[int], shown: int = 10) -> str:
    """Request numbers, the first ``shown`` of them."""
    more = len(request_ids) - shown
    listed = ", ".join(str(number) for number in request_ids[:shown])
    return f"request{'s' if len(request_ids) > 1 else ''} {listed}" + (f" and {more} more" if more > 0 else "")


def _seconds(value: float) -> str:
    """A duration in seconds: to the millisecond from 1 s up, else to 3 significant digits (a short run's
    0.47 ms is not 0.000 s)."""
    return f"{value:,.3f} s" if value >= 1 or value == 0 else f"{value:.3g} s"


def _percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.1f}%"


def plot_latency_cdfs(requests: list[dict[str, Any]], path_stem: Path, title: str) -> None:
    """Empirical CDFs of TTFT, TPOT and end-to-end latency over the completed requests."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, (column, label) in zip(axes, (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "end to end")),
                                   strict=True):
        values = sorted(r[column] for r in requests if r[column] == r[column])
        if values:
            ax.step(values, [(index + 1) / len(values) for index in range(len(values))], where="post")
        ax.set_xlabel(f"{label} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, plt, path_stem)


def plot_timeline(iterations: list[dict[str, Any]], capacity_blocks: int, path_stem: Path, title: str) -> None:
    """Sequences per iteration (prefill and decode) and KV-cache blocks in use, against time."""
    plt = pyplot()
    fig, (batch_ax, kv_ax) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    times = [row["start_s"] for row in iterations]
    batch_ax.step(times, [row["decode_sequences"] for row in iterations], where="post", label="decode sequences")
    batch_ax.step(times, [row["prefill_sequences"] for row in iterations], where="post", label="prefill sequences")
    batch_ax.set_ylabel("sequences per iteration")
    batch_ax.legend(fontsize=8, frameon=False)
    kv_ax.step(times, [100 * row["kv_blocks_in_use"] / capacity_blocks for row in iterations], where="post")
    kv_ax.set_ylabel("KV cache in use (%)")
    kv_ax.set_xlabel("time (s)")
    kv_ax.set_ylim(bottom=0)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, plt, path_stem)
