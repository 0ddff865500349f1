"""``accelsim validate``'s outputs: the table, the JSON record, the CSVs and the predicted-vs-measured plot."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from simulator.analysis.validation import Compared, Envelope

POINT_KEYS = ("key", "preset", "workload", "metric", "unit", "measured", "predicted", "ratio", "regime", "fitted",
              "calibration", "source")


def point_record(point: Compared) -> dict[str, Any]:
    record = {**asdict(point), "ratio": point.ratio}
    return {key: record[key] for key in POINT_KEYS}


def validation_json(compared: Sequence[Compared], envelope: Sequence[Envelope]) -> dict[str, Any]:
    return {"points": [point_record(point) for point in compared],
            "envelope": {e.regime: {"n": e.n, "geomean_ratio": e.geomean_ratio, "worst_error": e.worst_error}
                         for e in envelope}}


def format_validation(compared: Sequence[Compared], envelope: Sequence[Envelope],
                      not_simulated: Sequence[tuple[str, float, str, str]]) -> str:
    """Every point (predicted / measured), the envelope per regime, and what was not simulated."""
    lines = [f"{'point':<30} {'workload':<36} {'measured':>10} {'predicted':>10} {'unit':<7} {'ratio':>7}  regime"]
    for p in compared:
        mark = " (fitted)" if p.fitted else ""
        lines.append(f"{p.key:<30} {p.workload:<36} {p.measured:>10.4g} {p.predicted:>10.4g} {p.unit:<7} "
                     f"{p.ratio:>7.3f}  {p.regime}{mark}")
    presets = sorted({p.preset for p in compared})
    fitted = any(p.fitted for p in compared)
    lines += ["", f"envelope on {', '.join(presets)} (ratio = predicted / measured; "
                  + ("fitted points marked" if fitted else "nothing fitted: every point is a prediction") + ")",
              f"{'regime':<18} {'points':>6} {'geomean ratio':>14} {'worst error':>12}"]
    lines += [f"{e.regime:<18} {e.n:>6} {e.geomean_ratio:>14.3f} {100 * e.worst_error:>11.0f}%" for e in envelope]
    if not_simulated:
        lines += ["", "measured, not simulated:"]
        lines += [f"  {key}: {value:.4g} {unit} ({reason})" for key, value, unit, reason in not_simulated]
    return "\n".join(lines)


def points_csv(compared: Sequence[Compared]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=POINT_KEYS, lineterminator="\n")
    writer.writeheader()
    for point in compared:
        writer.writerow(point_record(point))
    return buffer.getvalue().encode()


MARKERS = "osD^v<>ph*X"  # 11 markers against matplotlib's 10 cycle colours


def regime_style(index: int) -> tuple[str, str]:
    """The marker and colour of the plot's ``index``-th regime: no two of the first 110 look alike."""
    return MARKERS[index % len(MARKERS)], f"C{index % 10}"


def plot_validation(compared: Sequence[Compared], path_stem: Path) -> None:
    """Predicted against measured, log-log, one marker per regime, fitted points filled and predicted ones
    hollow, with the y = x line."""
    from simulator.report.summary import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    values = [v for p in compared for v in (p.measured, p.predicted)]
    low, high = min(values) / 1.5, max(values) * 1.5
    ax.plot([low, high], [low, high], color="grey", linewidth=1, label="predicted = measured")
    for index, regime in enumerate(dict.fromkeys(p.regime for p in compared)):
        marker, colour = regime_style(index)
        for fitted in (True, False):
            chosen = [p for p in compared if p.regime == regime and p.fitted == fitted]
            if chosen:
                ax.scatter([p.measured for p in chosen], [p.predicted for p in chosen], marker=marker,
                           facecolors=colour if fitted else "none", edgecolors=colour,
                           label=f"{regime} ({'fitted' if fitted else 'predicted'})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    units = list(dict.fromkeys(p.unit for p in compared))
    ax.set_xlabel(f"measured ({', '.join(units[:-1])} or {units[-1]})" if len(units) > 1 else f"measured ({units[0]})")
    ax.set_ylabel("accelsim (same unit)")
    ax.set_title(f"accelsim against silicon ({', '.join(sorted({p.preset for p in compared}))})")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_figure(fig, plt, path_stem)
