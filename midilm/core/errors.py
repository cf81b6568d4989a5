"""The one exception type every midilm module raises for input the user can fix."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input the user can fix: the scripts print it as one line and exit with code 2."""
