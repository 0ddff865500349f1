"""Design-space sweeps: hardware axes x run configs x models, on any concurrent.futures.Executor.

```yaml
name: pe_array
hardware: rapid_like                     # base preset (name or path)
axes:
  product: {array.rows: [16, 32], array.cols: [64, 128]}   # every combination
  zip: {memory.dram_bytes_per_cycle: [64, 128], sfu.lanes: [32, 64]}   # in lock-step
configs: [int8, int8_sp]                 # names under configs/ or paths (relative to this file)
models: [bert-base, {name: vit-base, image_size: 224}]
include_frontend: true                   # the default: the whole model, as everywhere
include_head: true
trace: false                             # true: the real transformers models, traced (hf extra)
timing: default
```

Design points are the product of the ``product`` axes times the ``zip`` tuples; every design point
runs every config on every model. A point is identified by a stable id (a hash of its axis values,
config and model), so a sweep resumes by skipping finished ids. The pure part (expanding points,
evaluating a chunk) is separate from the edge (executors, part files, progress).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, Field, field_validator, model_validator

from simulator.config_io import StrictModel, read_yaml_mapping, unknown_name_message, validate
from simulator.hardware import SFU_OPS, Hardware, load_hardware
from simulator.output import atomic_path
from simulator.paper import WorkloadKnobs
from simulator.policy import RunConfig, load_baseline, load_run_config, resolve_run_config
from simulator.precision import parse_precision
from workloads.errors import InputError

# The model and each resolved workload knob get a column of their own (empty where a knob does not
# apply); stored bits are split into weight values, metadata (N:M indices, bitmaps, outlier indices),
# scale factors and biases, with their sum.
MODEL_COLUMNS = ("model", "batch", "tokens", "image_size", "audio_samples", "decoder_tokens", "head", "phase")
RESULT_COLUMNS = ("point_id", "point", "config", *MODEL_COLUMNS, "total_cycles", "latency_ms", "utilization",
                  "speedup_vs_baseline", "stored_bits", "value_bits", "index_bits", "scale_bits", "bias_bits",
                  "dram_bytes", "error")
INTEGER_COLUMNS = ("batch", "tokens", "image_size", "audio_samples", "decoder_tokens", "total_cycles",
                   "stored_bits", "value_bits", "index_bits", "scale_bits", "bias_bits", "dram_bytes")


class ModelEntry(WorkloadKnobs):
    name: str


class Axes(StrictModel):
    product: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Axes:
        for kind, table in (("product", self.product), ("zip", self.zip)):
            for path, values in table.items():
                if not values:
                    raise ValueError(f"{kind}.{path}: needs at least one value")
        lengths = {len(values) for values in self.zip.values()}
        if len(lengths) > 1:
            raise ValueError(f"zip axes must have equal lengths, got {sorted(lengths)}")
        shared = set(self.product) & set(self.zip)
        if shared:
            raise ValueError(f"axis {sorted(shared)[0]!r} is in both product and zip")
        return self

    @property
    def paths(self) -> list[str]:
        return [*self.product, *self.zip]


class SweepSpec(StrictModel):
    name: str
    hardware: str
    axes: Axes = Field(default_factory=Axes)
    configs: list[str] = Field(min_length=1)
    models: list[ModelEntry | str] = Field(min_length=1)
    include_frontend: bool = True  # one default everywhere: the whole model
    include_head: bool = True
    trace: bool = False  # simulate the transformers models traced on the meta device (hf extra)
    timing: Literal["default", "scalesim"] = "default"

    @field_validator("models")
    @classmethod
    def _entries(cls, models: list[ModelEntry | str]) -> list[ModelEntry | str]:
        return [ModelEntry(name=m) if isinstance(m, str) else m for m in models]


def _check_sfu_op(name: str) -> None:
    if name not in SFU_OPS:
        raise InputError(unknown_name_message(name, SFU_OPS, "SFU op"))


# How a sweep axis's key inside each hardware table is checked (every table has an entry).
TABLE_KEYS: dict[str, Callable[[str], object]] = {
    "sfu.cycles_per_element": _check_sfu_op,
    "macs_per_pe": parse_precision,  # any precision may be added to the table
}


def check_axis_path(path: str) -> None:
    """An axis must name a hardware field (``array.rows``) or a key of a table (``macs_per_pe.int8``)."""
    model: type[BaseModel] | None = Hardware
    parts = path.split(".")
    for depth, part in enumerate(parts):
        if model is None:
            raise InputError(f"axis {path!r}: {'.'.join(parts[:depth])} has no field {part!r}")
        field = model.model_fields.get(part)
        if field is None:
            raise InputError(f"axis {path!r}: hardware has no field {'.'.join(parts[:depth + 1])!r}")
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif getattr(annotation, "__origin__", None) is dict:
            if depth + 2 != len(parts):
                raise InputError(f"axis {path!r}: {'.'.join(parts[:depth + 1])} needs exactly one key after it")
            try:
                TABLE_KEYS[".".join(parts[:depth + 1])](parts[-1])
            except InputError as exc:
                raise InputError(f"axis {path!r}: {exc}") from None
            return
        else:
            model = None
    if model is not None:
        raise InputError(f"axis {path!r}: {path} is a group of fields, name one of them")


def design_points(axes: Axes) -> list[dict[str, Any]]:
    product = [dict(zip(axes.product, values, strict=True)) for values in itertools.product(*axes.product.values())]
    zipped = [dict(zip(axes.zip, values, strict=True)) for values in zip(*axes.zip.values(), strict=True)] or [{}]
    return [{**p, **z} for p in product for z in zipped]


def point_id(axis_values: dict[str, Any], config: str, model: ModelEntry) -> str:
    canonical = json.dumps({"axes": axis_values, "config": config, "model": model.model_dump()}, sort_keys=True)
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Point:
    index: int
    point_id: str
    axes: dict[str, Any]
    config: str  # resolved path of the run config
    model: ModelEntry


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs, as plain picklable data (it may run on another machine)."""

    spec: SweepSpec
    base_hardware: dict
    configs: dict[str, dict]  # config path -> {"config": RunConfig dump, "baseline": RunConfig dump | None}
    points: tuple[Point, ...]


def load_sweep(path: str | Path) -> tuple[SweepSpec, Plan]:
    path = Path(path)
    spec = validate(SweepSpec, read_yaml_mapping(path), str(path))
    for axis in spec.axes.paths:
        check_axis_path(axis)
    base = load_hardware(spec.hardware if not spec.hardware.endswith((".yaml", ".yml"))
                         else str(_resolve_path(spec.hardware, path.parent)))
    from workloads.models import load_model

    for entry in spec.models:  # unknown names and knobs that do not apply fail here, before any work
        try:
            load_model(entry.name).resolve(entry.workload())
        except InputError as exc:
            raise InputError(f"{path}: models: {entry.name}: {exc}") from None
    configs: dict[str, dict] = {}
    names: list[str] = []
    for name in spec.configs:
        resolved = resolve_run_config(name, path.parent)
        policy = load_run_config(resolved)
        if any(Path(seen).stem == resolved.stem for seen in names):
            raise InputError(f"{path}: two configs are named {resolved.stem!r}; rename one")
        clash = [seen for seen in names if configs[seen]["config"]["name"] == policy.name]
        if clash:
            raise InputError(f"{path}: {resolved} and {clash[0]} both say name: {policy.name}; the table could "
                             "not tell them apart, rename one")
        baseline = load_baseline(policy)
        configs[str(resolved)] = {"config": policy.config.model_dump(),
                                  "baseline": baseline.config.model_dump() if baseline else None}
        names.append(str(resolved))
    points = []
    for axis_values in design_points(spec.axes):
        for config in names:
            for model in spec.models:
                label = Path(config).stem
                points.append(Point(len(points), point_id(axis_values, label, model), axis_values, config, model))
    return spec, Plan(spec, base.model_dump(), configs, tuple(points))


def _resolve_path(name: str, base_dir: Path) -> Path:
    candidate = Path(name)
    return candidate if candidate.is_absolute() or candidate.exists() else base_dir / name


# --- evaluation (pure; runs in workers) -----------------------------------------------------------

def hardware_at(base: dict, axis_values: dict[str, Any]) -> Hardware:
    data = json.loads(json.dumps(base))
    for path, value in axis_values.items():
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return Hardware.model_validate(data)
    except Exception as exc:  # noqa: BLE001 - an infeasible design point is recorded, not fatal
        from simulator.config_io import validation_message

        message = validation_message(exc) if hasattr(exc, "errors") else str(exc)
        raise InputError(f"infeasible hardware: {message}") from None


@functools.lru_cache(maxsize=64)
def _trace(entry: ModelEntry, include_frontend: bool, include_head: bool, traced: bool):  # noqa: ANN202
    from simulator.paper import backbone_trace

    return backbone_trace(entry.name, entry, include_frontend, include_head, traced)


@functools.lru_cache(maxsize=64)
def _policy(config_json: str):  # noqa: ANN202
    from simulator.policy import Policy

    config = json.loads(config_json)
    return Policy(RunConfig.model_validate({"name": "sweep", "hardware": "sweep", **config}))


def evaluate_point(plan_spec: SweepSpec, base: dict, configs: dict[str, dict], point: Point) -> dict:
    entry = configs[point.config]
    scope = (point.model, plan_spec.include_frontend, plan_spec.include_head, plan_spec.trace)
    workload = _trace(*scope).workload
    row = {"point_id": point.point_id, "point": point.index, **{f"axis:{k}": v for k, v in point.axes.items()},
           "config": entry["config"]["name"], "model": point.model.name,
           **{knob: workload.get(knob) for knob in MODEL_COLUMNS[1:]}}
    try:
        hardware_json = hardware_at(base, point.axes).model_dump_json()
        totals = _totals(*scope, hardware_json, _simulation_json(entry["config"]), plan_spec.timing)
        speedup = None
        if entry["baseline"] is not None:
            baseline = _totals(*scope, hardware_json, _simulation_json(entry["baseline"]), plan_spec.timing)
            speedup = baseline["total_cycles"] / totals["total_cycles"]
        bits = {"value_bits": totals["weight_bits"] - totals["index_bits"], "index_bits": totals["index_bits"],
                "scale_bits": totals["scale_bits"], "bias_bits": totals["bias_bits"]}
        row.update(total_cycles=totals["total_cycles"], latency_ms=totals["latency_ms"],
                   utilization=totals["utilization"], speedup_vs_baseline=speedup,
                   stored_bits=sum(bits.values()), **bits, dram_bytes=totals["dram_bytes"], error="")
    except InputError as exc:  # an infeasible point: its numbers are missing (<NA>), its error says why
        row.update(error=str(exc))
    return row


def _simulation_json(config: dict) -> str:
    """A run config as a cache key: only what changes results (not its name or baseline)."""
    return RunConfig.model_validate(config).simulation_key()


@functools.lru_cache(maxsize=4096)
def _totals(entry: ModelEntry, include_frontend: bool, include_head: bool, traced: bool, hardware_json: str,
            config_json: str, timing: str) -> dict:
    """Run totals, memoised per process: a config and another config's identical baseline on the same
    design point are simulated once."""
    from simulator.engine import simulate

    trace = _trace(entry, include_frontend, include_head, traced)
    return simulate(trace, Hardware.model_validate_json(hardware_json), _policy(config_json), timing=timing).totals


def evaluate_chunk(plan_spec: SweepSpec, base: dict, configs: dict[str, dict], points: list[Point]) -> list[dict]:
    return [evaluate_point(plan_spec, base, configs, point) for point in points]


# --- execution (the edge: executors, part files, progress) ----------------------------------------

def plan_fingerprint(plan: Plan) -> str:
    canonical = json.dumps({"spec": plan.spec.model_dump(), "hardware": plan.base_hardware,
                            "configs": {Path(k).stem: v for k, v in plan.configs.items()},
                            "points": [p.point_id for p in plan.points]}, sort_keys=True, default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()


def _write_atomic(path: Path, writer: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def finished_rows(out_dir: Path) -> list[dict]:
    rows: list[dict] = []
    for part in sorted((out_dir / "parts").glob("part-*.json")):
        rows.extend(json.loads(part.read_text()))
    return rows


def prepare_out_dir(out_dir: Path, plan: Plan, resume: bool) -> None:
    fingerprint = plan_fingerprint(plan)
    manifest = out_dir / "sweep.json"
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not resume:
            raise InputError(f"--out {out_dir}: directory is not empty (use --resume to continue that sweep)")
        if not manifest.exists() or json.loads(manifest.read_text()).get("fingerprint") != fingerprint:
            raise InputError(f"--out {out_dir}: holds a different sweep (or none); cannot resume this one there")
        for folder in (out_dir, out_dir / "parts"):  # writes cut short by the kill: never a result
            for stale in folder.glob(".*.tmp"):
                stale.unlink()
        return
    if out_dir.parent.exists() and not out_dir.parent.is_dir():
        raise InputError(f"--out {out_dir}: {out_dir.parent} is not a directory")
    (out_dir / "parts").mkdir(parents=True, exist_ok=True)  # missing parents too, as every --out does
    _write_atomic(manifest, lambda tmp: tmp.write_text(json.dumps(
        {"name": plan.spec.name, "fingerprint": fingerprint, "points": len(plan.points)}, indent=2) + "\n"))


def chunk_points(points: list[Point], seconds_per_point: float, workers: int,
                 target_s: float = 0.1) -> list[list[Point]]:
    """Chunks that take >= target_s each (per-task overhead), but enough of them to feed every worker."""
    if not points:
        return []
    size = max(1, math.ceil(target_s / max(seconds_per_point, 1e-6)))
    size = min(size, max(1, math.ceil(len(points) / (2 * workers))))
    return [points[i:i + size] for i in range(0, len(points), size)]


class Progress:
    def __init__(self, total: int, already: int, stream: Any = sys.stderr) -> None:
        self.total, self.done, self.stream = total, already, stream
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
            _save_part(out_dir, point.index, evaluate_chunk(plan.spec, plan.base_hardware, plan.configs, [point]))
            seconds_per_point = time.perf_counter() - start
            if bar:
                bar.advance(1)
        chunks = chunk_points(todo[2:], seconds_per_point, workers)
        if executor is None:
            for chunk in chunks:
                _save_part(out_dir, chunk[0].index, evaluate_chunk(plan.spec, plan.base_hardware, plan.configs, chunk))
                if bar:
                    bar.advance(len(chunk))
        else:
            futures: dict[Future, list[Point]] = {
                executor.submit(evaluate_chunk, plan.spec, plan.base_hardware, plan.configs, chunk): chunk
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


def _save_part(out_dir: Path, first_index: int, rows: list[dict]) -> None:
    payload = json.dumps(rows, default=_json_default)
    _write_atomic(out_dir / "parts" / f"part-{first_index:08d}.json", lambda tmp: tmp.write_text(payload))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def assemble(plan: Plan, rows: list[dict]) -> pd.DataFrame:
    """One row per point, in plan order, whatever order chunks finished in (no duplicates)."""
    by_id: dict[str, dict] = {}
    for row in rows:
        by_id.setdefault(row["point_id"], row)
    axis_columns = [f"axis:{path}" for path in plan.spec.axes.paths]
    ordered = [by_id[p.point_id] for p in plan.points if p.point_id in by_id]
    columns = ["point_id", "point", *axis_columns, *RESULT_COLUMNS[2:]]
    frame = pd.DataFrame.from_records(ordered, columns=columns)
    # nullable types: a failed point leaves <NA> (an empty CSV cell) and integers stay integers
    frame = frame.astype({**{c: "Int64" for c in INTEGER_COLUMNS}, "latency_ms": "Float64", "utilization": "Float64",
                          "speedup_vs_baseline": "Float64", "head": "string", "phase": "string"})
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
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--executor dask needs the dask extra: pip install -e '.[dask]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="4s")
        except OSError as exc:
            raise InputError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        return client.get_executor(), client.close
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)

    def close() -> None:
        client.close()
        cluster.close()

    return client.get_executor(), close


LINE_STYLES = [{"marker": m, "linestyle": ls, "markersize": size, "markerfacecolor": face}
               for m, ls, size, face in (("o", "-", 7, "none"), ("s", "--", 5, None), ("^", ":", 8, "none"),
                                         ("x", "-.", 6, None), ("D", (0, (5, 1)), 4, None), ("v", "-", 6, "none"))]


def panel_labels(table: pd.DataFrame) -> pd.Series:
    """The model's name, plus the knobs that differ between entries of the same model."""
    labels = table["model"].astype(str)
    for model, rows in table.groupby("model", sort=False):
        varying = [knob for knob in MODEL_COLUMNS[1:] if rows[knob].nunique(dropna=False) > 1]
        for index, row in rows.iterrows():
            labels[index] = model + "".join(f" {knob}={row[knob]}" for knob in varying)
    return labels


def plot_sweep(table: pd.DataFrame, plan: Plan, path_stem: Path) -> None:
    """Latency per design point: one panel per model, one line per config, design points on x."""
    from simulator.report import legend_below, pyplot

    plt = pyplot()
    ok = table[table["error"] == ""].copy()
    paths = plan.spec.axes.paths
    ok["design"] = ok[paths].astype(str).agg(", ".join, axis=1) if paths else "base"
    ok["panel"] = panel_labels(ok)
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
        _write_atomic(path_stem.with_suffix(suffix), lambda tmp, suffix=suffix: fig.savefig(
            tmp, dpi=120, format=suffix[1:]))
    plt.close(fig)
