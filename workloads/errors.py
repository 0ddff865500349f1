"""The one exception type for bad user input (reported as one line, exit code 2), and the JSON object
reader every input file shares."""

import json
from typing import Any


class InputError(Exception):
    """Raised for invalid user input: unknown names, malformed files, impossible sizes."""


def json_object(text: str, where: str) -> dict[str, Any]:
    """``text`` as a JSON object, or one line naming ``where`` and what is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a JSON object")
    return value
