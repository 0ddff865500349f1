"""The notebooks run headless, start to finish (each one's last cell checks its own narrative)."""


import nbformat
import pytest
from cli_helpers import ROOT
from nbclient import NotebookClient

NOTEBOOKS = ROOT / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["explore_pe_array", "which_format_wins", "which_format_serves_more",
                                  "how_many_chips_for_70b"])
def test_notebook_executes_and_its_claims_hold(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert "narrative checks passed" in notebook.cells[-1].outputs[0]["text"]
