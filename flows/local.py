"""Run the rebuild flow in this process against an embedded Prefect API under the work dir.

What `colorfeat run` calls. It takes the work-dir lock before anything heavy is imported (when
the work dir exists: a busy one is reported at once), checks the options, the trunks and their
weights (before a new work dir is created), then reads what is already built
(colorfeat.stages.plan.preflight): when every stage is complete and the version published, it only
moves LATEST and records the run, without starting Prefect or PyTorch. Otherwise it starts the
embedded API and runs the flow. Everything the run prints goes to stderr (the file descriptor
itself is redirected, so child processes follow); the caller prints the version path to stdout.
A failure is printed once, by the caller: Prefect's console repeats of it are dropped.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from colorfeat.config import BackboneConfig, PipelineConfig
from colorfeat.errors import UserError
from colorfeat.worklock import work_dir_lock
from flows.summary import pictures_line, skip_reasons

if TYPE_CHECKING:  # imported where used: they bring Zarr and OpenCV
    from colorfeat.stages.plan import Preflight

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


class FailuresOnce(logging.Filter):
    """Drops Prefect's console records that repeat a failure the command reports itself.

    The command ends a failed run with one line (flows.cli.errors); Prefect logs the same failure
    four more times (the task failed, the task's final state, the flow's exception, the flow's
    final state). Kept: the traceback of an error the user did not cause, once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[BaseException] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Finished in state Failed"):
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        chain = _causes(exc)
        if _user_caused(exc) or any(e is s for e in chain for s in self.shown):
            return False
        self.shown += chain
        return True


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and those it was raised from or during."""
    chain = [exc]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) and nxt not in chain:
        chain.append(nxt)
    return chain


def _user_caused(exc: BaseException) -> bool:
    return isinstance(exc, UserError) and getattr(exc, "user_caused", True)


def _quiet_repeated_failures() -> None:
    """Each failure once on Prefect's console; no wrapping when stderr is not a terminal."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]  # fmt: skip
    once = FailuresOnce()
    for logger in loggers:
        for handler in logger.handlers:
            if not isinstance(handler, PrefectConsoleHandler):
                continue
            handler.filters = [f for f in handler.filters if not isinstance(f, FailuresOnce)]
            handler.addFilter(once)
            if not handler.console.is_terminal:
                handler.console.width = _WIDE


def say(message: str) -> None:
    """One progress line on stderr."""
    print(f"colorfeat: {message}", file=sys.stderr, flush=True)


def checked_config(options: dict[str, Any] | PipelineConfig) -> PipelineConfig:
    """The validated, resolved config of `colorfeat run` options; raises UserError.

    Checks everything that can be checked without doing the work or importing PyTorch, before
    anything starts. A URL's credentials are concealed (`colorfeat.redact.conceal`): Prefect
    records the flow's parameters, so they travel in this process's environment, which the flow
    run inherits.
    """
    from colorfeat.redact import conceal
    from colorfeat.stages.plan import check_source, require_device
    from colorfeat.store import check_store_root

    config = options
    if not isinstance(config, PipelineConfig):
        config = PipelineConfig.from_options(**options)
    check_source(config)
    check_store_root(config.store)
    config.check_files()
    require_device(config.device)
    config = config.resolved()
    return replace(config, source=conceal(config.source)) if "://" in config.source else config


def run_command(options: dict[str, Any], *, dry_run: bool = False) -> list[str]:
    """`colorfeat run`: the lines it prints on stdout (the version path, or the dry-run plan)."""
    config = PipelineConfig.from_options(**options)  # the values alone: nothing heavy yet
    if dry_run:
        return dry_run_report(checked_config(config))
    with work_dir_lock(config.work_dir, create=False):  # a busy work dir: said at once
        return [run_rebuild(checked_config(config))["path"]]


def run_rebuild(config: PipelineConfig) -> dict[str, Any]:
    """Run the rebuild flow with Prefect state in `<work_dir>/prefect`; its summary dict."""
    from colorfeat.stages.plan import preflight

    work_dir = Path(config.work_dir)
    check_trunks(trunks_to_build(config, preflight(config)))  # read-only: creates nothing
    with work_dir_lock(work_dir):
        check = preflight(config)  # again, now that no other run can change the answer
        say(f"checked what {work_dir} and {config.store} already hold")
        if check.nothing_to_do:
            summary = _reuse(config, check)
        else:
            say(_reuse_line(check))
            summary = _run_flow(config, work_dir / "prefect")
        say(pictures_line(summary["counts"]["images"]))
        say(_latest_line(check.latest, summary))
        _record_run(work_dir, config.to_options(), summary)
    return summary


def trunks_to_build(config: PipelineConfig, check: Preflight) -> list[BackboneConfig]:
    """The trunks whose features the run will compute (all of them before the source is ready)."""
    from colorfeat.stages import is_features, stages_for

    if check.source is None:
        return list(config.trunks)
    rows = [name for name in stages_for(config) if is_features(name)]  # in trunk order
    return [t for t, row in zip(config.trunks, rows, strict=True) if not check.stages[row].complete]


def check_trunks(trunks: list[BackboneConfig]) -> None:
    """Each trunk's backbone, node and image size, and that its weights can be had; UserError.

    Imports PyTorch, so only for trunks that will run: a bad name or weights that are neither
    cached nor reachable stop the run before its first stage, in one line that says what to do.
    """
    require_weights = _weights_check() if trunks else None
    for trunk in trunks:
        trunk.check()
        if require_weights is not None:
            require_weights(trunk)


def _weights_check() -> Any:
    """`colorfeat.trunk.weights.require_weights`, where the trunk package has it."""
    if importlib.util.find_spec("colorfeat.trunk.weights") is None:
        return None  # the features stage finds missing weights itself
    from colorfeat.trunk import weights

    return weights.require_weights


def _run_flow(config: PipelineConfig, home: Path) -> dict[str, Any]:
    from flows.embedded import embedded_api, isolate

    isolate(home)
    say(f"starting the embedded Prefect API (state in {home})")
    with stdout_to_stderr(), embedded_api(home, wait=False) as api:
        say("loading Prefect and PyTorch")
        from flows.pipeline import rebuild  # heavy imports while the API starts

        _quiet_repeated_failures()
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
    counts = _published_counts(path)
    return {
        "version": check.version, "path": path, "published": False, "executed": [],
        "counts": counts, "skip_reasons": skip_reasons(counts["images"]),
    }  # fmt: skip


def _published_counts(version: str) -> dict[str, Any]:
    """The `counts` attrs of a published version (captions and images, per split)."""
    import fsspec

    fs, base = fsspec.core.url_to_fs(version)
    attrs = json.loads(fs.cat_file(f"{base}/zarr.json")).get("attributes", {})
    return {"captions": {}, "images": {}, **attrs.get("counts", {})}  # none: an empty summary


def _reuse_line(check: Preflight) -> str:
    from colorfeat.stages.plan import pending_feature_chunks

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
    """Append the run to WORK_DIR/runs.jsonl: when, with what, which version, what it executed,
    how many pictures it kept and how many it skipped for each reason."""
    entry = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": parameters,
        "version": summary["version"],
        "path": summary["path"],
        "executed": summary.get("executed", []),
        "flow_run_id": summary.get("flow_run_id"),
        "kept": sum(c.get("images", 0) for c in summary["counts"]["images"].values()),
        "skipped": skip_reasons(summary["counts"]["images"]),
    }
    with open(work_dir / RUNS_LOG, "a") as log:
        log.write(json.dumps(entry, sort_keys=True) + "\n")


def dry_run_report(config: PipelineConfig) -> list[str]:
    """What `colorfeat run --dry-run` prints: read-only, nothing is created."""
    from colorfeat.stages.dryrun import report
    from colorfeat.stages.plan import preflight

    return report(config, preflight(config))
