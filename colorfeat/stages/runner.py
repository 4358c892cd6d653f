"""Run the stage table (colorfeat.stages) in this process, without Prefect: the library's runner.

`run_stages` walks the table in order, keys each directory stage from its inputs' keys and its
config slice, and hands each stage to a `call`: the plain call here, a cached Prefect task in
flows.pipeline. Stage functions are idempotent on their output directory (`_SUCCESS` holds the
result), so running the table again reuses every finished stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from colorfeat.config import PipelineConfig
from colorfeat.hashing import stage_key
from colorfeat.stages import Context, Stage, stages_for

StageCall = Callable[[Stage, Context], dict]


@dataclass
class Run:
    """What a run of the table produced: every stage's result and key, in order."""

    results: dict[str, dict] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # directory stages only

    @property
    def version(self) -> dict:
        """The publish stage's result: {"version", "path", "published"}."""
        return self.results["publish"]


def stages_dir(config: PipelineConfig) -> Path:
    """Where directory stages write: `WORK/stages/<key>`."""
    return Path(config.work_dir).resolve() / "stages"


def key_of(stage: Stage, config: PipelineConfig, known: Mapping[str, str]) -> str:
    """A directory stage's key, from the keys of the stages it reads (`known`, by name)."""
    inputs = [known[name] for name in stage.reads]
    return stage_key(stage.key_name, inputs, stage.config(config), stage.code_version)


def plan_keys(config: PipelineConfig, source_identity: str) -> dict[str, str]:
    """Every directory stage's key, from the config and the source identity alone."""
    known = {"acquire": source_identity}
    keys: dict[str, str] = {}
    for stage in stages_for(config).values():
        if stage.cached:
            keys[stage.name] = known[stage.name] = key_of(stage, config, known)
    return keys


def call_stage(stage: Stage, context: Context) -> dict:
    """Run one stage in this process."""
    return stage.run(context)


def run_stages(
    config: PipelineConfig, call: StageCall = call_stage, *, until: str | None = None
) -> Run:
    """Run the table in order (up to and including `until`); `call` runs each stage."""
    run = Run()
    known: dict[str, str] = {}
    for stage in stages_for(config).values():
        inputs = {name: run.results[name] for name in stage.reads}
        out_dir = None
        if stage.cached:
            run.keys[stage.name] = known[stage.name] = key_of(stage, config, known)
            out_dir = stages_dir(config) / known[stage.name]
        context = Context(config, inputs, out_dir, dict(run.keys))
        result = call(stage, context)
        run.results[stage.name] = result
        if not stage.cached:
            known[stage.name] = stage.key_of(result)
        if stage.name == until:
            break
    return run
