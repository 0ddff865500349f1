"""The optional keys of a model config: what each may hold (pure).

A family reads its required keys (sizes, checked by ``Family.check``) and some optional ones. An optional key
that is absent or null takes Hugging Face's default; one present with a value of another kind is refused,
never read as the default or by its truthiness (the string "false" is not false):

- a size is a positive integer, at most ``MAX_SIZE``;
- a count is a non-negative integer, at most ``MAX_SIZE``;
- a flag is true or false;
- a probability is a number from 0 to 1;
- an activation is one of ``ACTIVATIONS``: Hugging Face's names for the functions the vector unit models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from workloads.errors import InputError
from workloads.ops import MAX_SIZE

Value = TypeVar("Value", bool, int, float)

# Hugging Face's activation names (transformers' ACT2FN) -> the vector op that computes them. The GELU
# approximations cost the vector unit what GELU costs; SiLU is also called swish.
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu", "gelu_fast": "gelu", "gelu_pytorch_tanh": "gelu",
               "gelu_accurate": "gelu", "silu": "silu", "swish": "silu", "tanh": "tanh"}


@dataclass(frozen=True)
class OptionalKeys:
    """The optional keys a family reads, by what they hold (see the module docstring)."""

    sizes: tuple[str, ...] = ()
    counts: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    probabilities: tuple[str, ...] = ()
    activations: tuple[str, ...] = ()

    def check(self, cfg: Mapping[str, Any], where: str) -> None:
        """Refuse the first key of ``cfg`` that holds what it may not."""
        for key in self.sizes:
            _integer(cfg, key, where, 1)
        for key in self.counts:
            _integer(cfg, key, where, 0)
        for key in self.flags:
            value = cfg.get(key)
            if value is not None and not isinstance(value, bool):
                raise InputError(f"{where}: key {key!r} must be true or false, got {value!r}")
        for key in self.probabilities:
            value = cfg.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not 0 <= value <= 1):
                raise InputError(f"{where}: key {key!r} must be a number from 0 to 1, got {value!r}")
        for key in self.activations:
            value = cfg.get(key)
            if value is not None and (not isinstance(value, str) or value not in ACTIVATIONS):
                raise InputError(f"{where}: key {key!r} names activation {value!r}, which is not modelled "
                                 f"(modelled: {', '.join(ACTIVATIONS)})")


def check_size(key: str, value: Any, where: str, least: int = 1) -> None:
    """Refuse ``value`` of ``key`` unless it is an integer from ``least`` to ``MAX_SIZE``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: key {key!r} has an invalid value {value!r}")
    if value < least:
        raise InputError(f"{where}: key {key!r} must be {'positive' if least else 'non-negative'}, got {value!r}")
    if value > MAX_SIZE:
        raise InputError(f"{where}: key {key!r} = {value} exceeds the largest accepted size {MAX_SIZE} (31 bits)")


def _integer(cfg: Mapping[str, Any], key: str, where: str, least: int) -> None:
    value = cfg.get(key)
    if value is not None:
        check_size(key, value, where, least)


def activation(cfg: Mapping[str, Any], key: str, default: str) -> str:
    """The vector op of the activation ``cfg[key]`` names (checked by :meth:`OptionalKeys.check`), or of
    ``default`` when it names none."""
    name = cfg.get(key)
    return ACTIVATIONS[default if name is None else name]


def setting(cfg: Mapping[str, Any], key: str, default: Value) -> Value:
    """The optional key ``cfg[key]`` (of the kind :meth:`OptionalKeys.check` let through), or ``default`` when
    it is absent or null."""
    value = cfg.get(key)
    return default if value is None else cast(Value, value)
