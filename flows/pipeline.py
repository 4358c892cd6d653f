"""The `rebuild` flow: a source in, a published feature-store version out, one task per stage.

The tasks are made from the stage table (colorfeat.stages), which
`colorfeat.stages.runner.run_stages` walks here as everywhere: directory stages are Prefect tasks
cached by their stage key (see flows.caching), acquire and publish plain tasks; a stage's `retries`
retry transient faults. A summary and per-colour table are left as Prefect artifacts. With
`train_dir`, the `train` flow then fits a colorizer on the published version.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from prefect import Task, flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from colorfeat.config import PipelineConfig
from colorfeat.redact import conceal
from colorfeat.retry import retry_if_transient
from colorfeat.stages import Context, Stage, source_attrs, stages_for
from colorfeat.stages.plan import StagePlan
from colorfeat.stages.runner import Run, run_stages
from colorfeat.worklock import work_dir_lock
from flows.caching import Ledger, stage_task
from flows.report import report_rebuild
from flows.summary import skip_reasons

BACKOFF_S = 10  # first retry delay of a stage; doubles with each try


def run_table_stage(
    out_dir: Path | None, stage: str, config: PipelineConfig, inputs: dict, keys: dict
) -> dict:
    """The body of every stage task: run stage `stage` of the table."""
    return stages_for(config)[stage].run(Context(config, inputs, out_dir, keys))


@cache
def stage_task_of(stage: Stage) -> Task:
    """The Prefect task of a stage: its name, its retry policy, cached by key if it has one."""
    options: dict[str, Any] = {}
    if stage.retries:
        options = {
            "retries": stage.retries,
            "retry_delay_seconds": exponential_backoff(backoff_factor=BACKOFF_S),
            "retry_jitter_factor": 0.5,
            "retry_condition_fn": retry_if_transient,
        }
    if stage.cached:
        return stage_task(stage.name, task_run_name="{out_dir.name}", **options)(run_table_stage)
    return task(run_table_stage, name=stage.name, cache_policy=NO_CACHE, **options)


@task(cache_policy=NO_CACHE)
def collect_garbage(cfg: PipelineConfig, keep_last: int | None, keep_days: float | None) -> dict:
    """`store gc` after a successful rebuild: old versions and unneeded stage outputs go."""
    from colorfeat.store import gc

    found = gc(cfg.store, keep_last=keep_last, keep_days=keep_days, work_dir=cfg.work_dir)
    removed = [r["version"] for r in found.removed]
    return {"removed": removed, "freed_bytes": found.freed_bytes, "note": found.note}


@flow(name="rebuild")
def rebuild(
    config: dict[str, Any],
    train_dir: str | None = None,
    train_preset: str = "small",
    train_max_steps: int | None = None,
    keep_last: int | None = None,
    keep_days: float | None = None,
) -> dict[str, Any]:
    """Rebuild the feature store from a source and publish a version (or reuse the identical one).

    `config` holds the `colorfeat run` options by name (any PipelineConfig field may be given;
    `devices` spreads feature extraction over several devices, default every GPU when cuda);
    `train_dir` also fits a colorizer on the published version; `keep_last`/`keep_days` then
    apply `colorfeat store gc` to the store and the work dir. Prefect records the parameters:
    give a URL's credentials through `colorfeat run`, which conceals them (docs/security.md).
    """
    options = dict(config)
    options["source"] = conceal(options.get("source", "synthetic"))
    cfg = PipelineConfig.from_options(**options).resolved()
    with work_dir_lock(cfg.work_dir):
        summary = build_version(cfg)
    if keep_last is not None or keep_days is not None:
        summary["retention"] = collect_garbage(cfg, keep_last, keep_days)
    if train_dir is not None:
        from flows.training import train

        summary["train"] = train(
            store=summary["path"], out=train_dir, preset=train_preset, max_steps=train_max_steps,
            device=cfg.device, seed=cfg.seed,
        )  # fmt: skip
    return summary


def build_version(cfg: PipelineConfig) -> dict[str, Any]:
    """The stage table, run inside the rebuild flow; returns the run's summary."""
    ledger = Ledger(Path(cfg.work_dir) / "prefect" / "results")

    def call(stage: Stage, ctx: Context) -> dict:
        args = (stage.name, ctx.config, dict(ctx.inputs), dict(ctx.keys or {}))
        if ctx.out_dir is None:
            return ledger.call(stage.name, stage_task_of(stage), None, *args)
        key = ctx.out_dir.name
        return ledger.run(StagePlan(stage.name, key, ctx.out_dir), stage_task_of(stage), *args)

    run = run_stages(cfg, call)
    summary = _summary(cfg, run, ledger)
    report_rebuild(summary, run.results["images"])
    return summary


def _summary(cfg: PipelineConfig, run: Run, ledger: Ledger) -> dict[str, Any]:
    got = run.results
    return {
        "flow_run_id": str(flow_run.id),
        "version": run.version["version"],
        "path": run.version["path"],
        "published": run.version["published"],
        "source": source_attrs(cfg, got["acquire"]),
        "counts": {"captions": got["captions"]["counts"], "images": got["images"]["counts"]},
        "skipped": got["images"].get("skipped", 0),
        "skip_reasons": skip_reasons(got["images"]["counts"]),
        "stages": ledger.stages,
        "executed": ledger.executed,
    }
