"""Files users hand the command line (a request trace, GEMM cases), read whole; a CSV's table checked."""

from __future__ import annotations

import csv
from pathlib import Path

from workloads.errors import InputError


def read_text(path: str | Path) -> str:
    """A text file's contents, without the byte-order mark a spreadsheet's export starts with; one line
    naming the file when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc.__class__.__name__})") from None


def read_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows (by column name) of a CSV file (see :func:`read_text`); blank lines are
    skipped. One line naming the file when it names a column twice or has a row with more or fewer fields
    than the header (rows counted from the first after the header)."""
    text = read_text(path)
    header, *lines = [line for line in csv.reader(text.splitlines()) if line] or [[]]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise InputError(f"{path}: column(s) {', '.join(twice)} appear more than once")
    for number, line in enumerate(lines, start=1):
        if len(line) != len(header):
            raise InputError(f"{path}: row {number} has {len(line)} fields, the header {len(header)}")
    return header, [dict(zip(header, line, strict=True)) for line in lines]
