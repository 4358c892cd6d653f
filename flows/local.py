"""Run the rebuild flow in this process against an embedded Prefect API under the work dir.

What `colorfeat run` calls. Everything the run prints goes to stderr (the file descriptor itself
is redirected, so child processes follow); the caller prints the version path to stdout afterwards.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

from colorfeat.errors import UserError
from flows.embedded import embedded_api, isolate


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send whatever this process and its children write to stdout to stderr, until the end."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


class _OneLineUserErrors(logging.Formatter):
    """Formats like `inner`, minus the traceback of errors a user caused (the text says it all)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, UserError) and getattr(exc, "user_caused", True):
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return self.inner.format(record)


def _quiet_user_error_tracebacks() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]  # fmt: skip
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(
                handler.formatter, _OneLineUserErrors
            ):
                handler.setFormatter(_OneLineUserErrors(handler.formatter or logging.Formatter()))


def run_rebuild(parameters: dict[str, Any]) -> dict[str, Any]:
    """Run `rebuild(**parameters)` with Prefect state in `<work_dir>/prefect`; its summary dict."""
    home = Path(parameters["work_dir"]).resolve() / "prefect"
    isolate(home)
    with stdout_to_stderr(), embedded_api(home, wait=False) as api:
        from colorfeat.extract import resolve_device
        from flows.pipeline import rebuild  # heavy imports while the API starts

        resolve_device(parameters.get("device", "auto"))  # no GPU for cuda: fail before any work
        _quiet_user_error_tracebacks()
        api.wait()
        return rebuild(**parameters)
