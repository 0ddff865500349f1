"""One object of a checkpoint's ``quantization_config``, read a field at a time with its type checked (pure).

A field that is absent or null takes the scheme's default; one of another type is refused naming it, never
read by its truthiness (``"false"`` is not false) or iterated as something else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workloads.errors import InputError


class Fields:
    """The object ``value`` at ``where`` (``quantization_config``, ``quantization_config.sparsity_config``)."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, Mapping):
            raise InputError(f"{where} must be an object, got {value!r}")
        self.value, self.where = value, where

    def raw(self, key: str) -> Any:
        """The field as written (None when absent), for a check of its own."""
        return self.value.get(key)

    def _typed(self, key: str, kinds: tuple[type, ...], what: str) -> Any:
        value = self.value.get(key)
        if value is not None and (isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds)):
            raise InputError(f"{self.where}.{key} must be {what}, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._typed(key, (bool,), "true or false")
        return default if value is None else bool(value)

    def integer(self, key: str, default: int | None = None) -> int | None:
        value = self._typed(key, (int,), "an integer")
        return default if value is None else int(value)

    def text(self, key: str, default: str = "") -> str:
        value = self._typed(key, (str,), "a string")
        return default if value is None else str(value)

    def names(self, key: str) -> list[str]:
        """A list of module names or patterns (none when absent)."""
        value = self.value.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
            raise InputError(f"{self.where}.{key} must be a list of module names, got {value!r}")
        return list(value)

    def object(self, key: str) -> Fields | None:
        value = self.value.get(key)
        return None if value is None else Fields(value, f"{self.where}.{key}")
