"""Reading YAML configs into pydantic models: duplicate keys rejected, every error one line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic
import yaml

from workloads.errors import InputError

Model = TypeVar("Model", bound=pydantic.BaseModel)


def unknown_name_message(name: str, known: tuple[str, ...] | list[str], what: str) -> str:
    """``unknown op 'sofmax'; did you mean 'softmax'?`` (or the list of known names)."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
    return f"unknown {what} {name!r}; {hint}"


def reject_unknown_keys(table: dict[str, Any], known: tuple[str, ...] | list[str], what: str) -> None:
    """Every mapping keyed by names rejects names it does not know (ValueError, for pydantic validators)."""
    for key in table:
        if key not in known:
            raise ValueError(unknown_name_message(key, known, what))


class StrictModel(pydantic.BaseModel):
    """Base of every config schema: unknown keys are errors, values are immutable and of their field's type
    (strict: ``true`` is not a count, ``1`` not a flag, ``"8"`` not a number; an integer is a number)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)


def _listed_as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# A pair of sizes as YAML writes it (a list), each a strict integer.
SizePair = Annotated[tuple[int, int], pydantic.BeforeValidator(_listed_as_tuple)]


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (YAML's default is last-wins)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[str, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise InputError(f"line {line}: duplicate key {key!r}")
        seen.add(key)
    return {str(key): value for key, value in loader.construct_mapping(node, deep=deep).items()}


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file, or an InputError naming the file."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a YAML file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise InputError(f"{path}: malformed YAML: {where}{problem}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a YAML mapping at the top level")
    return data


def validation_message(error: pydantic.ValidationError) -> str:
    """The first validation problem as 'field.path: message'."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required field is missing"
    message = message.removeprefix("Value error, ")
    return f"{where}: {message}"


def validate(model: type[Model], data: dict[str, Any], source: str) -> Model:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InputError(f"{source}: {validation_message(exc)}") from None
