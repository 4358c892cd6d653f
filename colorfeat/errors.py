"""The one exception type for problems a user can cause (the CLIs report it: flows.cli.errors)."""

from __future__ import annotations

from collections.abc import Callable


class UserError(Exception):
    """A problem with the input, the flags or the environment: reported as one line, exit 1."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type's name when it has none), for the one
    line a UserError built from it says; at most `limit` characters."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def require(condition: bool, message: str | Callable[[], str]) -> None:
    """Raise UserError with `message` unless `condition` holds."""
    if not condition:
        raise UserError(message() if callable(message) else message)
