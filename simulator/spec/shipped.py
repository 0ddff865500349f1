"""Where the shipped data lives: run configs, hardware presets, sweeps and the paper's reference figures.

In a source checkout (or an editable install) they are the repository's ``configs/`` and
``reference/``; a regular install puts the same files under ``<prefix>/share/accelsim/``
(``[tool.setuptools.data-files]`` in pyproject.toml).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _installed_roots() -> list[Path]:
    """Where an install may have put share/accelsim: the interpreter's data prefix, and the prefix of the
    site-packages this module was installed into (<prefix>/lib/pythonX.Y/site-packages/simulator/spec)."""
    module = Path(__file__).resolve()
    roots = [Path(sysconfig.get_path("data"))]
    if len(module.parents) > 5 and module.parents[2].name == "site-packages":
        roots.append(module.parents[5])
    return [root / "share" / "accelsim" for root in roots]


def data_root(source_root: Path = SOURCE_ROOT, installed_roots: list[Path] | None = None) -> Path:
    """The folder holding ``configs/`` and ``reference/``: the checkout's, else the installed copy."""
    for root in (source_root, *(installed_roots if installed_roots is not None else _installed_roots())):
        if (root / "configs" / "hardware").is_dir():
            return root
    return source_root  # nothing shipped is found: lookups then fail with the path they tried


DATA_ROOT = data_root()
CONFIG_DIR = DATA_ROOT / "configs"
HARDWARE_DIR = CONFIG_DIR / "hardware"
REFERENCE_DIR = DATA_ROOT / "reference"
