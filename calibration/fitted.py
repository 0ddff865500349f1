"""What every calibration script ends with: print the values it fitted, and fail when the preset holds others."""

from __future__ import annotations

import sys
from typing import Any


def report(preset: str, fitted: dict[str, Any], held: dict[str, Any]) -> None:
    """Print ``fitted`` (field -> value); exit 1 when configs/hardware/PRESET.yaml holds ``held`` instead."""
    for name, value in fitted.items():
        print(f"{name}: {value}")
    if fitted != held:
        print(f"configs/hardware/{preset}.yaml holds {held}: update it", file=sys.stderr)
        sys.exit(1)
