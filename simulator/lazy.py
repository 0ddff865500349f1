"""Package attributes imported on first use, so that importing a package stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str], names: list[str]) -> tuple[Callable[[str], Any],
                                                                                   Callable[[], list[str]]]:
    """A ``__getattr__`` and ``__dir__`` for ``package`` that import each name of ``exports`` (name ->
    module) on first use; ``names`` are the package's own globals."""

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def dir_() -> list[str]:
        return sorted({*names, *exports})

    return getattr_, dir_
