"""Run the rebuild flow in this process against an embedded Prefect API under the work dir.

What `colorfeat run` calls. It takes the work-dir lock first, then reads what is already built
(colorfeat.stages.plan.preflight):
when every stage is complete and the version published, it only moves
LATEST and records the run, without starting Prefect or PyTorch. Otherwise it starts the
embedded API and runs the flow. Everything the run prints goes to stderr (the file descriptor
itself is redirected, so child processes follow); the caller prints the version path to stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from colorfeat.config import PipelineConfig
from colorfeat.errors import UserError
from colorfeat.stages.plan import Preflight, pending_feature_chunks, preflight
from flows.caching import work_dir_lock
from flows.embedded import embedded_api, isolate

RUNS_LOG = "runs.jsonl"  # in the work dir: one JSON line per finished run
_WIDE = 10_000  # columns of a log console that is not a terminal: records are never wrapped


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
    """One-line user errors in Prefect's console logs; no wrapping when stderr is not a terminal."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]  # fmt: skip
    for logger in loggers:
        for handler in logger.handlers:
            if not isinstance(handler, PrefectConsoleHandler):
                continue
            if not isinstance(handler.formatter, _OneLineUserErrors):
                handler.setFormatter(_OneLineUserErrors(handler.formatter or logging.Formatter()))
            if not handler.console.is_terminal:
                handler.console.width = _WIDE


def say(message: str) -> None:
    """One progress line on stderr."""
    print(f"colorfeat: {message}", file=sys.stderr, flush=True)


def checked_config(options: dict[str, Any]) -> PipelineConfig:
    """The validated, resolved config of `colorfeat run` options; raises UserError.

    Checks everything that can be checked without doing the work, before anything starts. A
    URL's credentials are concealed (`colorfeat.redact.conceal`): Prefect records the flow's
    parameters, so they travel in this process's environment, which the flow run inherits.
    """
    from colorfeat.redact import conceal
    from colorfeat.stages.plan import check_source, require_device
    from colorfeat.store import check_store_root

    config = PipelineConfig.from_options(**options)
    check_source(config.source)
    check_store_root(config.store)
    config.check_files()
    require_device(config.device)
    config = config.resolved()
    return replace(config, source=conceal(config.source)) if "://" in config.source else config


def run_command(options: dict[str, Any], *, dry_run: bool = False) -> list[str]:
    """`colorfeat run`: the lines it prints on stdout (the version path, or the dry-run plan)."""
    config = checked_config(options)
    if dry_run:
        return dry_run_report(config)
    return [run_rebuild(config)["path"]]


def run_rebuild(config: PipelineConfig) -> dict[str, Any]:
    """Run the rebuild flow with Prefect state in `<work_dir>/prefect`; its summary dict."""
    work_dir = Path(config.work_dir)
    if not preflight(config).nothing_to_do:  # read-only: creates nothing
        # Trunk names are checked against torchvision (which imports PyTorch), so only when
        # something will run, and before anything is said or created: a bad one is one line.
        for trunk in config.trunks:
            trunk.check()
    with work_dir_lock(work_dir):
        check = preflight(config)  # again, now that no other run can change the answer
        say(f"checked what {work_dir} and {config.store} already hold")
        if check.nothing_to_do:
            summary = _reuse(config, check)
        else:
            say(_reuse_line(check))
            summary = _run_flow(config, work_dir / "prefect")
        say(_latest_line(check.latest, summary))
        _record_run(work_dir, config.to_options(), summary)
    return summary


def _run_flow(config: PipelineConfig, home: Path) -> dict[str, Any]:
    isolate(home)
    say(f"starting the embedded Prefect API (state in {home})")
    with stdout_to_stderr(), embedded_api(home, wait=False) as api:
        say("loading Prefect and PyTorch")
        from flows.pipeline import rebuild  # heavy imports while the API starts

        _quiet_user_error_tracebacks()
        api.wait()
        say("running the rebuild flow")
        return rebuild(config.to_options())


def _reuse(config: PipelineConfig, check: Preflight) -> dict[str, Any]:
    """Everything is built: point LATEST at the version (if it is not already) and say so."""
    from colorfeat.store import point_latest

    say(f"nothing to do: every stage is built and version {check.version} is published")
    if check.latest != check.version:
        point_latest(config.store, check.version)
    path = f"{config.store.rstrip('/')}/versions/{check.version}"
    return {"version": check.version, "path": path, "published": False, "executed": []}


def _reuse_line(check: Preflight) -> str:
    if check.source is None:
        return "the source is not ready yet: every stage will run"
    line = f"reusing {len(check.reused)} of {len(check.stages) + 1} stages"
    done, total = pending_feature_chunks(check)
    line += f", {done} of {total} feature chunks" if total else ""
    return line


def _latest_line(before: str | None, summary: dict[str, Any]) -> str:
    after = summary["version"]
    if before == after:
        return f"LATEST stays at {after}"
    if before is None:
        return f"LATEST set to {after} (the store's first version)"
    if not summary.get("published"):
        return f"LATEST moved back from {before} to {after}, built earlier with this configuration"
    return f"LATEST moved from {before} to {after}"


def _record_run(work_dir: Path, parameters: dict[str, Any], summary: dict[str, Any]) -> None:
    """Append the run to WORK_DIR/runs.jsonl: when, with what, which version, what it executed."""
    entry = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": parameters,
        "version": summary["version"],
        "path": summary["path"],
        "executed": summary.get("executed", []),
        "flow_run_id": summary.get("flow_run_id"),
    }
    with open(work_dir / RUNS_LOG, "a") as log:
        log.write(json.dumps(entry, sort_keys=True) + "\n")


def dry_run_report(config: PipelineConfig) -> list[str]:
    """What `colorfeat run --dry-run` prints: read-only, nothing is created."""
    from colorfeat.stages.dryrun import report

    return report(config, preflight(config))
