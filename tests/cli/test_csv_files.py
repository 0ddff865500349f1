"""The CSV files users hand the command line: read as a spreadsheet writes them, or refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.cli.csv_files import read_csv
from workloads.errors import InputError


def test_a_spreadsheets_export_reads_as_written(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffa,b\r\n1,\"x,y\"\r\n\r\n2,z\r\n".encode())  # a byte-order mark, CRLF, a blank line
    assert read_csv(path) == (["a", "b"], [{"a": "1", "b": "x,y"}, {"a": "2", "b": "z"}])
    path.write_text("")
    assert read_csv(path) == ([], [])


@pytest.mark.parametrize("text, needle", [("a,b,a,c,b\n1,2,3,4,5\n", "column(s) a, b appear more than once"),
                                          ("a,b\n1,2\n1,2,3\n", "row 2 has 3 fields, the header 2"),
                                          ("a,b\n1\n", "row 1 has 1 fields, the header 2")])
def test_an_ambiguous_table_is_refused(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(InputError) as refused:
        read_csv(path)
    assert str(refused.value) == f"{path}: {needle}"


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.csv: cannot read \\(FileNotFoundError\\)"):
        read_csv(tmp_path / "missing.csv")
    (tmp_path / "latin.csv").write_bytes(b"a\n\xff\n")
    with pytest.raises(InputError, match="cannot read \\(UnicodeDecodeError\\)"):
        read_csv(tmp_path / "latin.csv")
