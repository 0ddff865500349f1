"""Writing results: atomic files (temp file + rename) and trace serialisation."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from workloads.errors import InputError
from workloads.ops import COLUMNS, Trace

if TYPE_CHECKING:  # pandas costs ~0.4 s to import; commands that do not need it skip it
    import pandas as pd

TRACE_FORMATS = ("table", "csv", "json", "parquet")
FORMAT_BY_SUFFIX = {".txt": "table", ".csv": "csv", ".json": "json", ".parquet": "parquet"}


def format_for_path(path: str | os.PathLike[str], fmt: str | None) -> str:
    """The trace format a file gets: its extension's, which an explicit ``fmt`` must agree with."""
    implied = FORMAT_BY_SUFFIX.get(Path(path).suffix.lower())
    if fmt is None:
        if implied is None:
            known = ", ".join(FORMAT_BY_SUFFIX)
            raise InputError(f"--out {path}: cannot tell the format from the extension ({known}); give --format")
        return implied
    if implied is not None and implied != fmt:
        raise InputError(f"--format {fmt} does not match --out {path} (a {Path(path).suffix} file holds {implied})")
    return fmt


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _writable(target: Path) -> Iterator[None]:
    """A place that cannot be written (no permission, a read-only or virtual file system) is the user's
    choice of ``target``: one line, not an internal error."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"{target}: cannot write there ({exc.strerror or exc})") from None


def _created_parents(parent: Path) -> list[Path]:
    """Create ``parent`` and its missing ancestors; return the ones created, deepest first (none are left
    when one cannot be created)."""
    missing = []
    for folder in (parent, *parent.parents):
        if folder.exists():
            break
        missing.append(folder)
    created: list[Path] = []
    try:
        for folder in reversed(missing):
            with _writable(folder):  # also where an ancestor is a file
                folder.mkdir(mode=0o777)  # the umask applies
            created.insert(0, folder)
    except InputError:
        _remove_empty(created)
        raise
    return created


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


def _clear_stale_staging(target: Path) -> None:
    """Remove staging leftovers of an earlier writer of ``target`` that was killed mid-write.

    Two processes writing the same target at once are not supported.
    """
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def check_target(target: str | os.PathLike[str], force: bool, option: str = "--out") -> Path:
    """One overwrite policy for every command: an existing file or non-empty directory needs --force."""
    path = Path(target)
    if path.is_dir() and any(path.iterdir()) and not force:
        raise InputError(f"{option} {path}: directory is not empty (use --force to replace it)")
    if path.exists() and not path.is_dir() and not force:
        raise InputError(f"{option} {path}: file exists (use --force to replace it)")
    return path


def check_out_dir(out: str | os.PathLike[str], force: bool) -> Path:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path}: exists and is not a directory")
    return check_target(path, force)


def check_out_file(out: str | os.PathLike[str], force: bool, option: str = "--out") -> Path:
    if str(out).endswith(("/", os.sep)):  # Path() would drop the separator and write a file of that name
        raise InputError(f"{option} {out}: ends with a separator, expected a file path")
    path = file_target(out, option)
    if path.is_dir():
        raise InputError(f"{option} {out}: is a directory, expected a file path")
    return check_target(path, force, option)


def file_target(target: str | os.PathLike[str], option: str) -> Path:
    """Where a file written to ``target`` goes: the file a symbolic link names (the link stays); a device, a
    pipe or a socket is refused (replacing it would take /dev/null or a terminal away from the machine)."""
    path = Path(target)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file() and not path.is_dir():
        raise InputError(f"{option} {target}: not a regular file (a device, a pipe or a socket); give a file path")
    return path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; it replaces ``target`` only if the block succeeds.

    Missing parent directories are created (and removed again if the block fails); the file gets the
    permissions the umask gives a new file.
    """
    target = file_target(target, "output")
    if target.is_dir():
        raise InputError(f"{target}: is a directory, expected a file path")
    parent = target.parent if str(target.parent) else Path(".")
    created = _created_parents(parent)
    tmp = ""
    try:
        with _writable(target):
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
        created = []
    finally:
        if tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _remove_empty(created)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Write a directory's files into a sibling temp dir, then swap it in whole (or not at all).

    Missing parents are created (and removed again on failure); stale staging directories of a killed
    earlier writer are cleared first; the directory gets the permissions the umask gives a new one.
    """
    created = _created_parents(target.parent)
    staging = None
    try:
        _clear_stale_staging(target)
        with _writable(target):
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        yield staging
        os.chmod(staging, 0o777 & ~_umask())
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
            os.replace(target, retired / "old")
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
        created = []
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)


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
