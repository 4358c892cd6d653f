"""The architecture holds: one stage table, options declared once, a library without Prefect."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import yaml

from colorfeat.config import PipelineConfig, rebuild_options
from colorfeat.hashing import file_sha256
from colorfeat.stages import Context, Stage, registered

ROOT = Path(__file__).resolve().parents[1]


def count_colour_words(ctx: Context) -> dict:
    """A test-only stage: the colour words of the kept captions, written to its own directory."""
    words = ctx.inputs["captions"]["counts"]["colour_words"]
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / "colour_words.json"
    path.write_text(json.dumps(words, sort_keys=True))
    return {"path": str(path), "words": len(words)}


COLOUR_WORDS = Stage(
    "colour_words",
    count_colour_words,
    reads=("captions",),
    config=lambda c: {"lexicon": file_sha256(c.lexicon)},
    version=1,
)

# Run in a fresh interpreter where Prefect and Typer cannot be imported.
LIBRARY_ONLY = """
import importlib, importlib.abc, json, pkgutil, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("prefect", "typer"):
            raise ModuleNotFoundError(f"{name} is blocked")

sys.meta_path.insert(0, Blocked())
import colorfeat, colortrain
CLI = {"flows.cli.colorfeat", "flows.cli.errors", "flows.cli.colortrain"}
imported = []
for package in (colorfeat, colortrain):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        imported.append(info.name)

from colorfeat.config import BackboneConfig, PipelineConfig
from colorfeat.stages.runner import plan_keys, run_stages
from colorfeat.stages import registered
from tests.test_architecture import COLOUR_WORDS

work = sys.argv[1]
config = PipelineConfig(
    source="synthetic", store=work + "/store", work_dir=work, limit=10, device="cpu",
    backbone=BackboneConfig(backbone="resnet18", weights="none", image_size=32),
)
with registered(COLOUR_WORDS):
    run = run_stages(config)
    planned = plan_keys(config, run.results["acquire"]["identity"])
print(json.dumps({
    "imported": imported, "planned": planned, "keys": run.keys, "version": run.version,
    "colour_words": run.results["colour_words"],
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "typer")),
}))
"""


def test_the_library_imports_and_runs_the_stage_table_without_prefect_or_typer(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY_ONLY, str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert {"colorfeat.stages", "colorfeat.stages.runner", "colortrain.train"} <= set(
        out["imported"]
    )
    assert out["loaded"] == []
    # The test-only stage ran through the real runner, has a key in the plan and a directory.
    assert out["planned"] == out["keys"] and "colour_words" in out["keys"]
    written = json.loads(Path(out["colour_words"]["path"]).read_text())
    assert written and out["colour_words"]["words"] == len(written)
    assert Path(out["colour_words"]["path"]).parent.name == out["keys"]["colour_words"]
    version = Path(out["version"]["path"])
    attrs = json.loads((version / "zarr.json").read_text())["attributes"]
    assert "colour_words" in attrs["config"] and out["version"]["published"]


def test_a_registered_stage_is_planned_and_leaves_the_table_after():
    from colorfeat import stages
    from colorfeat.stages.plan import plan_rebuild

    config = PipelineConfig(device="cpu")
    with registered(COLOUR_WORDS):
        assert list(stages.STAGES)[-2:] == ["colour_words", "publish"]
        plan = plan_rebuild(config, "src")
    assert plan["colour_words"].key.startswith("colour_words-")
    assert "colour_words" not in stages.STAGES
    assert "colour_words" not in plan_rebuild(config, "src")


def test_run_and_schedule_offer_exactly_the_config_options():
    import typer.main

    from flows.cli.colorfeat import app

    names = [o.name for o in rebuild_options()]
    commands = typer.main.get_command(app).commands
    run = [p.name for p in commands["run"].params]
    schedule = [p.name for p in commands["schedule"].params]
    assert run == [*names, "dry_run"]
    assert schedule == ["cron", "timezone", "name", *names]
    fields = {o.name: o for o in rebuild_options()}
    limit = next(p for p in commands["run"].params if p.name == "limit")
    assert limit.help == fields["limit"].help and limit.required is False


def test_the_flow_and_the_deployment_take_the_config_as_one_parameter():
    from flows.pipeline import rebuild

    assert list(inspect.signature(rebuild.fn).parameters)[0] == "config"
    spec = yaml.safe_load((ROOT / "flows" / "prefect.yaml").read_text())
    weekly = next(d for d in spec["deployments"] if d["name"] == "weekly-rebuild")
    assert set(weekly["parameters"]) == {"config"}
    options = weekly["parameters"]["config"]
    assert set(options) <= {o.name for o in rebuild_options()}
    config = PipelineConfig.from_options(**options)  # validates
    assert config.to_options() == {**PipelineConfig.from_options().to_options(), **options}
