"""Writing results: atomic files (temp file + rename) and trace serialisation."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from workloads.errors import InputError
from workloads.ops import COLUMNS, Trace

if TYPE_CHECKING:  # pandas costs ~0.4 s to import; commands that do not need it skip it
    import pandas as pd

TRACE_FORMATS = ("table", "csv", "json", "parquet")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    if target.is_dir():
        raise InputError(f"{target}: is a directory, expected a file path")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{target}: directory {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def trace_frame(trace: Trace) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(trace.records(), columns=list(COLUMNS))
    frame["macs"] = [op.macs for op in trace]
    return frame


def trace_table(trace: Trace) -> str:
    """Human-readable view: one line per op, then totals."""
    frame = trace_frame(trace)
    buf = io.StringIO()
    buf.write(frame.to_string(index=False))
    buf.write("\n\n")
    workload = ", ".join(f"{k}={v}" for k, v in trace.workload.items())
    buf.write(f"model: {trace.model} ({workload})\n")
    buf.write(f"ops: {len(trace)}  (matrix: {sum(op.is_matrix for op in trace)}, "
              f"vector: {sum(not op.is_matrix for op in trace)})\n")
    buf.write(f"MACs: {trace.macs:,}\nFLOPs (2 x MACs): {trace.flops:,} ({trace.flops / 1e9:.2f} GFLOP)\n")
    buf.write(f"parameters: {trace.params:,}\n")
    return buf.getvalue()


def trace_bytes(trace: Trace, fmt: str) -> bytes:
    """Serialise a trace: csv and parquet hold the op columns (plus macs); json adds the workload."""
    frame = trace_frame(trace)
    if fmt == "csv":
        return frame.to_csv(index=False, lineterminator="\n").encode()
    if fmt == "json":
        doc = {"model": trace.model, "workload": dict(trace.workload), "ops": frame.to_dict(orient="records"),
               "totals": {"ops": len(trace), "macs": trace.macs, "flops": trace.flops, "params": trace.params}}
        return (json.dumps(doc, indent=1) + "\n").encode()
    if fmt == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return buf.getvalue()
    if fmt == "table":
        return trace_table(trace).encode()
    raise InputError(f"unknown format {fmt!r}; choose from {', '.join(TRACE_FORMATS)}")
