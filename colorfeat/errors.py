"""The one exception type for problems a user can cause, and how CLIs report them."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer


class UserError(Exception):
    """A problem with the input, the flags or the environment: reported as one line, exit 1."""


@contextmanager
def reported_errors(prog: str) -> Iterator[None]:
    """Turn a UserError (and the OS errors a user causes) into one stderr line and exit 1."""
    try:
        yield
    except UserError as exc:
        _fail(prog, str(exc))
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        _fail(prog, f"{exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        _fail(prog, "interrupted; run the same command again to resume", code=130)


def _fail(prog: str, message: str, code: int = 1) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def require(condition: bool, message: str | Callable[[], str]) -> None:
    """Raise UserError with `message` unless `condition` holds."""
    if not condition:
        raise UserError(message() if callable(message) else message)
