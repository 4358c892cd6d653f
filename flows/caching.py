"""Stage tasks cached by their stage key, and the ledger of what each stage of a run did.

Two layers keep an unchanged rebuild from doing heavy work. The stage functions themselves are
idempotent on their output directory (`_SUCCESS` holds the result), which holds with or without
Prefect. On top, each stage task's Prefect cache key is that same stage key, so a reused stage shows
as `Cached` in the UI. The Prefect record is only trusted while the directory is complete: when it
is not (deleted, or never finished), the task runs with `refresh_cache` and overwrites the record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

from colorfeat.errors import UserError
from colorfeat.stages.plan import StagePlan


class StageFailed(UserError):
    """A stage of the rebuild failed; the message names the stage and the reason, on one line."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        if not isinstance(exc, UserError):
            reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        super().__init__(f"the {stage} stage failed: {reason}")
        self.stage = stage
        self.user_caused = isinstance(exc, UserError)


def _stage_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return Path(parameters["out_dir"]).name  # the stage key, see colorfeat.stages.plan


def stage_task(name: str, **options: Any) -> Callable[[Callable[..., dict]], Task]:
    """A Prefect task wrapping a stage, `out_dir` first: cached by stage key, JSON results."""
    return task(
        name=name,
        cache_policy=CachePolicy.from_cache_key_fn(_stage_cache_key),
        persist_result=True,
        result_serializer="json",
        **options,
    )


class Ledger:
    """Runs the stages of one rebuild and records, per stage, its key, whether it did work, time."""

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = Path(results_dir)
        self.stages: dict[str, dict[str, Any]] = {}

    def run(self, stage: StagePlan, stage_task: Task, *args: Any, **kwargs: Any) -> dict:
        """Run `stage_task(stage.out_dir, *args, **kwargs)`, cached; return the stage's result."""
        reused = stage.complete
        configured = stage_task.with_options(
            refresh_cache=not reused, result_storage=self.results_dir
        )
        start = time.perf_counter()
        try:
            result = configured(stage.out_dir, *args, **kwargs)
        except Exception as exc:
            raise StageFailed(stage.name, exc) from exc
        self.record(stage.name, stage.key, executed=not reused, start=start)
        return result

    def call(self, name: str, plain_task: Task, *args: Any, **kwargs: Any) -> dict:
        """Run an uncached task (acquire, publish); it reports `executed` or `published` itself."""
        start = time.perf_counter()
        try:
            result = plain_task(*args, **kwargs)
        except Exception as exc:
            raise StageFailed(name, exc) from exc
        executed = result.get("executed", result.get("published"))
        self.record(name, result.get("version") or result.get("identity"), executed, start)
        return result

    def record(self, name: str, key: str | None, executed: bool | None, start: float) -> None:
        """Note a finished stage; `executed` None: the stage does not say (acquire, checked)."""
        seconds = round(time.perf_counter() - start, 3)
        self.stages[name] = {"key": key, "executed": executed, "seconds": seconds}
        what = {True: "did its work", False: "reused its output", None: "done"}[executed]
        get_run_logger().info(f"{name}: {what} in {seconds:.1f} s ({key})")

    @property
    def executed(self) -> list[str]:
        """The stages that did work in this run, in order."""
        return [name for name, info in self.stages.items() if info["executed"] is True]
