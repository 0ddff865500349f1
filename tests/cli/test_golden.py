"""The golden set (tests/golden/cases.py): each case's CSV and JSON outputs equal the pinned files byte for byte."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cli_helpers import TESTS

sys.path.insert(0, str(TESTS / "golden"))
from cases import CASES, HERE, run_case


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_are_byte_identical_to_the_golden_files(name: str, tmp_path: Path) -> None:
    produced = run_case(name, tmp_path / "out")
    pinned = {path.name: path.read_bytes() for path in sorted((HERE / name).iterdir())}
    assert sorted(produced) == sorted(pinned)
    changed = [file_name for file_name in pinned if produced[file_name] != pinned[file_name]]
    assert not changed, f"{name}: {changed} differ from tests/golden/{name} (regenerate on purpose only)"
