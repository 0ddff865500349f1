"""CSV files users hand the command line (a request trace, GEMM cases), read whole and checked."""

from __future__ import annotations

import csv
from pathlib import Path

from workloads.errors import InputError


def read_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows (by column name) of a CSV file; blank lines are skipped and a byte-order mark
    (a spreadsheet's export) is not part of the first name. One line naming the file when it cannot be read,
    names a column twice, or has a row with more or fewer fields than the header (rows counted from the
    first after the header)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    header, *lines = [line for line in csv.reader(text.splitlines()) if line] or [[]]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise InputError(f"{path}: column(s) {', '.join(twice)} appear more than once")
    for number, line in enumerate(lines, start=1):
        if len(line) != len(header):
            raise InputError(f"{path}: row {number} has {len(line)} fields, the header {len(header)}")
    return header, [dict(zip(header, line, strict=True)) for line in lines]
