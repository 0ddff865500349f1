"""Copies of frozen, slotted records with some fields changed, for the engine's hot paths (pure).

``dataclasses.replace`` re-runs a record's checks and walks its fields; a copier made here for one class
takes the copied record and any of its fields by keyword and sets each field in one generated line, as
``dataclasses`` generates ``__init__`` (a loop over the fields costs twice as much). It runs no checks:
the new values must come from checked records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

_Record = TypeVar("_Record")


def copier(cls: type[_Record]) -> Callable[..., _Record]:
    """A function ``copy(record, **changes)`` for the slotted class ``cls``; an unknown field is refused."""
    names: tuple[str, ...] = cls.__slots__  # type: ignore[attr-defined]
    source = (f"def copy(obj, *, {', '.join(f'{name}=_KEEP' for name in names)}):\n    new = _new(_cls)\n"
              + "".join(f"    _set(new, {name!r}, obj.{name} if {name} is _KEEP else {name})\n" for name in names)
              + "    return new\n")
    namespace: dict[str, Any] = {"_new": object.__new__, "_set": object.__setattr__, "_cls": cls, "_KEEP": object()}
    exec(source, namespace)  # the source is built from the class's own field names
    generated = namespace["copy"]

    def copy(record: _Record, **changes: Any) -> _Record:
        try:
            return cast(_Record, generated(record, **changes))
        except TypeError:
            unknown = [name for name in changes if name not in names]
            if unknown:
                raise TypeError(f"{cls.__name__} has no field {unknown[0]!r}") from None
            raise

    return copy
