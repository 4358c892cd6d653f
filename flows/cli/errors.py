"""How the `colorfeat` and `colortrain` commands report a problem a user caused: one line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from colorfeat.errors import UserError


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
