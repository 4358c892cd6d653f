"""The one exception type for problems a user can cause (the CLIs report it: flows.cli.errors)."""

from __future__ import annotations

from collections.abc import Callable


class UserError(Exception):
    """A problem with the input, the flags or the environment: reported as one line, exit 1."""


def require(condition: bool, message: str | Callable[[], str]) -> None:
    """Raise UserError with `message` unless `condition` holds."""
    if not condition:
        raise UserError(message() if callable(message) else message)
