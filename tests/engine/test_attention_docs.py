"""docs/engine.md's context-length table is what docs/context_table.py prints today."""

from __future__ import annotations

import re
import sys

from cli_helpers import ROOT


def test_the_docs_table_is_the_simulators_output():
    sys.path.insert(0, str(ROOT / "docs"))
    from context_table import table

    page = (ROOT / "docs" / "engine.md").read_text()
    pinned = re.search(r"<!-- context-table -->\n(.*?)\n<!-- /context-table -->", page, re.S)
    assert pinned is not None
    assert pinned.group(1).strip() == table()
