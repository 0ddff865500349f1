"""The one exception type for bad user input (reported as one line, exit code 2)."""


class InputError(Exception):
    """Raised for invalid user input: unknown names, malformed files, impossible sizes."""
