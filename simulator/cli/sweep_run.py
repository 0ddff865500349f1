"""Running a sweep (the edge): the --out directory, atomic part files, resume, executors, progress, plot.

The plan and the evaluation of points are pure and live in :mod:`simulator.analysis.sweep` and
:mod:`simulator.analysis.sweep_points`; this module writes
files and owns processes. Every finished chunk of points is written atomically to ``parts/``, so a
killed sweep resumes without recomputing or duplicating points.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd

from simulator.analysis.sweep import (
    INTEGER_COLUMNS,
    MODEL_COLUMNS,
    RESULT_COLUMNS,
    SERVING_COLUMNS,
    SWEEP_ENERGY_COLUMNS,
    Plan,
    Point,
)
from simulator.analysis.sweep_points import evaluate_chunk
from simulator.energy.tables import ENERGY_DIR, table_path
from simulator.report.files import atomic_path
from workloads.errors import InputError


def plan_fingerprint(plan: Plan, files: dict[str, str]) -> str:
    """What a sweep is: its plan and what the ``files`` it reads hold (:func:`files_read`)."""
    canonical = json.dumps({"spec": plan.spec.model_dump(), "hardware": plan.base_hardware,
                            "system": plan.base_system, "files": files,
                            "configs": {Path(k).stem: v for k, v in plan.configs.items()},
                            "points": [p.point_id for p in plan.points]}, sort_keys=True, default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()


def files_read(plan: Plan) -> dict[str, str]:
    """What the files a sweep's workers read by path hold (the plan carries the rest as data), by path: a
    model's config.json (a checkpoint's too, with its weight files' names and sizes) and an energy table
    of the user's. A file edited between a kill and ``--resume`` would mix points of two inputs."""
    paths = [Path(entry.name) for entry in plan.spec.models]
    energy = plan.base_hardware.get("energy")
    table = table_path(energy["table"], "energy table") if energy else None
    paths += [table] if table is not None and ENERGY_DIR not in table.parents else []  # shipped: part of accelsim
    read: dict[str, str] = {}
    for path in paths:
        if path.is_dir():
            weights = sorted((p.name, p.stat().st_size) for p in path.glob("*.safetensors"))
            digest = hashlib.sha1(json.dumps(weights).encode())
            if (path / "config.json").is_file():
                digest.update((path / "config.json").read_bytes())
            read[str(path.resolve())] = digest.hexdigest()
        elif path.is_file():
            read[str(path.resolve())] = hashlib.sha1(path.read_bytes()).hexdigest()
    return read


def _save_figure(fig: Any, fmt: str, path: Path) -> None:
    fig.savefig(path, dpi=120, format=fmt)


def _write_atomic(path: Path, writer: Callable[[Path], object]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def finished_rows(out_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for part in sorted((out_dir / "parts").glob("part-*.json")):
        rows.extend(json.loads(part.read_text()))
    return rows


def prepare_out_dir(out_dir: Path, plan: Plan, resume: bool) -> None:
    read = files_read(plan)
    fingerprint = plan_fingerprint(plan, read)
    manifest = out_dir / "sweep.json"
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not resume:
            raise InputError(f"--out {out_dir}: directory is not empty (use --resume to continue that sweep)")
        held = json.loads(manifest.read_text()) if manifest.exists() else {}
        if held.get("fingerprint") != fingerprint:
            changed = [path for path, digest in read.items() if held.get("files", read).get(path, digest) != digest]
            why = f": {changed[0]} changed since it ran" if changed else ""
            raise InputError(f"--out {out_dir}: holds a different sweep (or none){why}; cannot resume this one there")
        for folder in (out_dir, out_dir / "parts"):  # writes cut short by the kill: never a result
            for stale in folder.glob(".*.tmp"):
                stale.unlink()
        return
    if out_dir.parent.exists() and not out_dir.parent.is_dir():
        raise InputError(f"--out {out_dir}: {out_dir.parent} is not a directory")
    (out_dir / "parts").mkdir(parents=True, exist_ok=True)  # missing parents too, as every --out does
    _write_atomic(manifest, lambda tmp: tmp.write_text(json.dumps(
        {"name": plan.spec.name, "fingerprint": fingerprint, "points": len(plan.points), "files": read},
        indent=2) + "\n"))


def discard_unfinished(out_dir: Path, existed: bool) -> None:
    """After a failed sweep: remove what prepare_out_dir wrote if no point finished (so a rerun starts
    afresh); keep a directory holding finished points, which --resume continues."""
    if finished_rows(out_dir):
        return
    if not existed:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    (out_dir / "sweep.json").unlink(missing_ok=True)
    shutil.rmtree(out_dir / "parts", ignore_errors=True)


def chunk_points(points: list[Point], seconds_per_point: float, workers: int,
                 target_s: float = 0.1) -> list[list[Point]]:
    """Chunks that take >= target_s each (per-task overhead), but enough of them to feed every worker."""
    if not points:
        return []
    size = max(1, math.ceil(target_s / max(seconds_per_point, 1e-6)))
    size = min(size, max(1, math.ceil(len(points) / (2 * workers))))
    return [points[i:i + size] for i in range(0, len(points), size)]


class Progress:
    def __init__(self, total: int, already: int, stream: Any = None) -> None:
        # sys.stderr read now, not when the module was imported (it may have been replaced since)
        self.total, self.done, self.stream = total, already, stream if stream is not None else sys.stderr
        self.start, self.started_with, self.last = time.perf_counter(), already, 0.0
        self.advance(0)  # show where a resumed sweep starts from

    def advance(self, count: int, final: bool = False) -> None:
        self.done += count
        now = time.perf_counter()
        if final or now - self.last >= 0.5 or self.done == self.total:
            rate = (self.done - self.started_with) / max(now - self.start, 1e-9)
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} points, "
                              f"{rate:.1f} points/s")
            if self.done == self.total or final:
                self.stream.write("\n")
            self.stream.flush()
            self.last = now


def run_sweep(plan: Plan, out_dir: Path, executor: Executor | None, workers: int,
              progress: bool = True) -> pd.DataFrame:
    """Evaluate every unfinished point, writing each finished chunk atomically; return the full table."""
    done_ids = {row["point_id"] for row in finished_rows(out_dir)}
    todo = [p for p in plan.points if p.point_id not in done_ids]
    bar = Progress(len(plan.points), len(plan.points) - len(todo)) if progress else None
    if todo:
        # Two points here: the first warms this process (traces, caches), the second times a warm point,
        # which sizes the chunks.
        seconds_per_point = 0.0
        for point in todo[:2]:
            start = time.perf_counter()
            _save_part(out_dir, point.index, evaluate_chunk(plan.spec, plan.base_hardware, plan.configs, [point],
                                                                   plan.base_system))
            seconds_per_point = time.perf_counter() - start
            if bar:
                bar.advance(1)
        chunks = chunk_points(todo[2:], seconds_per_point, workers)
        if executor is None:
            for chunk in chunks:
                _save_part(out_dir, chunk[0].index, evaluate_chunk(plan.spec, plan.base_hardware, plan.configs, chunk,
                                                                       plan.base_system))
                if bar:
                    bar.advance(len(chunk))
        else:
            futures: dict[Future[Any], list[Point]] = {
                executor.submit(evaluate_chunk, plan.spec, plan.base_hardware, plan.configs, chunk,
                                plan.base_system): chunk
                for chunk in chunks}
            for future in as_completed(futures):
                chunk = futures[future]
                _save_part(out_dir, chunk[0].index, future.result())
                if bar:
                    bar.advance(len(chunk))
    table = assemble(plan, finished_rows(out_dir))
    _write_atomic(out_dir / "results.csv", lambda tmp: table.to_csv(tmp, index=False))
    _write_atomic(out_dir / "results.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    return table


def _save_part(out_dir: Path, first_index: int, rows: list[dict[str, Any]]) -> None:
    payload = json.dumps(rows, default=_json_default)
    _write_atomic(out_dir / "parts" / f"part-{first_index:08d}.json", lambda tmp: tmp.write_text(payload))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def assemble(plan: Plan, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per point, in plan order, whatever order chunks finished in (no duplicates)."""
    by_id: dict[str, dict[str, Any]] = {}
    for row in rows:
        by_id.setdefault(row["point_id"], row)
    axis_columns = [f"axis:{path}" for path in plan.spec.axes.paths]
    ordered = [by_id[p.point_id] for p in plan.points if p.point_id in by_id]
    columns = ["point_id", "point", *axis_columns, *RESULT_COLUMNS[2:]]
    frame = pd.DataFrame.from_records(ordered, columns=columns)
    # nullable types: a failed point leaves <NA> (an empty CSV cell) and integers stay integers
    floats = ("latency_ms", "ttft_ms", "tpot_ms", "tokens_per_s", "tokens_per_s_per_chip", "collective_share",
              "utilization", "speedup_vs_baseline", *SWEEP_ENERGY_COLUMNS,
              *(column for column in SERVING_COLUMNS if column not in INTEGER_COLUMNS))
    # an axis of integers with a null among them (an attention block size left to the search) stays integer
    integer_axes = [c for c in axis_columns if frame[c].isna().any()
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in frame[c].dropna())]
    frame = frame.astype({**{c: "Int64" for c in (*INTEGER_COLUMNS, *integer_axes)},
                          **{c: "Float64" for c in floats}, "head": "string", "phase": "string"})
    # an axis the results report anyway (chips, rate) keeps the results' column (the axis's value where a point
    # failed before reporting it)
    reported = [c for c in axis_columns if c.removeprefix("axis:") in RESULT_COLUMNS]
    for column in reported:
        frame[column.removeprefix("axis:")] = frame[column.removeprefix("axis:")].fillna(frame[column])
    frame = frame.drop(columns=reported)
    return frame.rename(columns={c: c.removeprefix("axis:") for c in axis_columns})


def _die_with_parent() -> None:
    """Pool worker initializer: on Linux, ask the kernel to kill this worker when the sweep process dies
    (even by SIGKILL), so no worker outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def make_executor(kind: str, workers: int, scheduler: str | None) -> tuple[Executor | None, Callable[[], None]]:
    """(executor, close) for 'local' (process pool; None when one worker) or 'dask'."""
    if kind == "local":
        if scheduler:
            raise InputError("--scheduler needs --executor dask")
        if workers == 1:
            return None, lambda: None
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent)
        return pool, lambda: pool.shutdown(cancel_futures=True)
    if kind != "dask":
        raise InputError(f"unknown executor {kind!r}; choose local or dask")
    try:
        from dask.distributed import Client
    except ImportError:
        raise InputError("--executor dask needs the dask extra: pip install -e '.[dask]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="4s")
        except OSError as exc:
            raise InputError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        return client.get_executor(), client.close
    return _local_cluster(workers)


def _local_cluster(workers: int) -> tuple[Executor, Callable[[], None]]:
    """(executor, close) of a dask cluster on this machine. Its workers' scratch space is the run's own,
    removed with the cluster (dask's default would leave a dask-scratch-space folder in the temp directory
    behind), or when the cluster does not start."""
    import dask
    from dask.distributed import Client, LocalCluster

    with ExitStack() as cleanup:
        scratch = tempfile.mkdtemp(prefix="accelsim-dask-")
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        dask.config.set({"temporary-directory": scratch})  # the scheduler's and the workers' scratch space
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               local_directory=scratch)
        cleanup.callback(cluster.close)
        client = Client(cluster)
        cleanup.callback(client.close)
        started = cleanup.pop_all()  # from here on, the caller closes it
    return client.get_executor(), started.close


LINE_STYLES = [{"marker": m, "linestyle": ls, "markersize": size, "markerfacecolor": face}
               for m, ls, size, face in (("o", "-", 7, "none"), ("s", "--", 5, None), ("^", ":", 8, "none"),
                                         ("x", "-.", 6, None), ("D", (0, (5, 1)), 4, None), ("v", "-", 6, "none"))]


def panel_labels(table: pd.DataFrame, swept: tuple[str, ...] = ()) -> pd.Series:
    """The model's name, plus the knobs that differ between entries of the same model (not the ``swept``
    ones: those are design-point axes, on the x axis)."""
    labels = dict(zip(table.index, table["model"].astype(str), strict=True))
    for model, rows in table.groupby("model", sort=False):
        varying = [knob for knob in MODEL_COLUMNS[1:] if knob not in swept and rows[knob].nunique(dropna=False) > 1]
        for index, row in rows.iterrows():
            labels[index] = str(model) + "".join(f" {knob}={row[knob]}" for knob in varying)
    return pd.Series(labels, dtype=str, name="model").reindex(table.index)


def plot_sweep(table: pd.DataFrame, plan: Plan, path_stem: Path) -> None:
    """Latency per design point: one panel per model, one line per config, design points on x."""
    from simulator.report.summary import legend_below, pyplot

    plt = pyplot()
    ok = table[(table["error"] == "") & (table["latency_ms"] > 0)].copy()  # a serving point that ran nothing: 0
    paths = plan.spec.axes.paths
    ok["design"] = ok[paths].apply(lambda values: ", ".join(map(str, values)), axis=1) if paths else "base"
    ok["panel"] = panel_labels(ok, tuple(p.removeprefix("model.") for p in plan.spec.axes.paths
                                         if p.startswith("model.")))
    models = list(dict.fromkeys(ok["panel"]))
    configs = list(dict.fromkeys(ok["config"]))
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(4.5 * max(1, len(models)) + 1.5, 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=False):
        for config, group in ok[ok["panel"] == model].groupby("config", sort=False):
            style = LINE_STYLES[configs.index(config) % len(LINE_STYLES)]  # lines that coincide stay visible
            ax.plot(group["design"], group["latency_ms"], label=config, **style)
        ax.set_title(model)
        ax.set_xlabel(", ".join(paths) if paths else "design point")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle(f"sweep {plan.spec.name}: latency per design point")
    legend_below(fig, axes[0], columns=min(6, max(1, len(configs))))
    for suffix in (".png", ".svg"):
        _write_atomic(path_stem.with_suffix(suffix), functools.partial(_save_figure, fig, suffix[1:]))
    plt.close(fig)


def pareto_mask(table: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    """True for rows no other row beats: as good in every column and better in one (lower is better)."""
    values = table[list(columns)].to_numpy(dtype=float)
    keep = []
    for row in values:
        dominated = ((values <= row).all(axis=1) & (values < row).any(axis=1)).any()
        keep.append(not dominated)
    return pd.Series(keep, index=table.index)


def plot_pareto(table: pd.DataFrame, plan: Plan, path_stem: Path) -> bool:
    """Latency against energy per design point, coloured by area; the latency-energy-area Pareto front
    ringed. False (and no plot) when no point has energy."""
    from simulator.report.summary import legend_below, pyplot

    energy = "energy_per_token_uj" if table["energy_per_token_uj"].notna().any() else "energy_uj"
    ok = table[(table["error"] == "") & table[energy].notna() & table["area_mm2"].notna()].copy()
    if ok.empty:
        return False
    ok["front"] = pareto_mask(ok, ("latency_ms", energy, "area_mm2"))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5.2))
    configs = list(dict.fromkeys(ok["config"]))
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    low, high = float(ok["area_mm2"].min()), float(ok["area_mm2"].max())
    points = None
    for index, (config, group) in enumerate(ok.groupby("config", sort=False)):
        points = ax.scatter(group["latency_ms"], group[energy], c=group["area_mm2"], cmap="viridis", vmin=low,
                            vmax=high if high > low else low + 1, marker=markers[configs.index(config) % len(markers)],
                            label=config, edgecolors="none", s=36)
        front = group[group["front"]]
        ax.scatter(front["latency_ms"], front[energy], facecolors="none", edgecolors="red", s=110, linewidths=1.2,
                   label="Pareto front (latency, energy, area)" if index == 0 else None)
    if points is not None:
        fig.colorbar(points, ax=ax, label="area (mm2)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("energy per token (uJ)" if energy == "energy_per_token_uj" else "energy (uJ)")
    fig.suptitle(f"sweep {plan.spec.name}: latency, energy and area")
    legend_below(fig, [ax], columns=min(4, len(configs) + 1))
    for suffix in (".png", ".svg"):
        _write_atomic(path_stem.with_suffix(suffix), functools.partial(_save_figure, fig, suffix[1:]))
    plt.close(fig)
    return True
