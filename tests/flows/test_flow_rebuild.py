"""The rebuild flow: stages run once, unchanged rebuilds reuse everything, artifacts are left."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from colorfeat.stages.plan import STAGES
from colorfeat.store import open_store
from flows.pipeline import rebuild

DIR_STAGES = [s for s in STAGES if s not in ("acquire", "publish")]


def test_unchanged_rebuild_does_no_work_and_a_changed_layer_reruns_only_features(prefect_api, tiny):
    first = rebuild(tiny)
    assert first["executed"] == [s for s in STAGES if s != "acquire"]  # acquire: checked
    assert first["published"]
    store = open_store(tiny["store"])
    assert store.version == first["version"]
    assert store.features("train").shape[1:] == (128, 8, 8)  # resnet18.layer2 at S = 64

    again = rebuild(tiny)
    assert again["executed"] == []
    states = task_states(again)
    assert {states[stage] for stage in DIR_STAGES} == {"Cached"}, states
    assert again["version"] == first["version"] and not again["published"]
    assert sorted(p.name for p in (store_root(tiny) / "versions").iterdir()) == [first["version"]]

    layer3 = rebuild({**tiny, "layer": "layer3"})
    assert layer3["executed"] == ["features", "publish"]
    assert layer3["version"] != first["version"]
    for stage in DIR_STAGES:
        same = layer3["stages"][stage]["key"] == first["stages"][stage]["key"]
        assert same == (stage != "features"), stage
    latest = open_store(tiny["store"])
    assert latest.version == layer3["version"]
    assert latest.features("val").shape[1:] == (256, 4, 4)
    np.testing.assert_array_equal(latest.array("train", "rgb")[:], store.array("train", "rgb")[:])


def test_rebuild_leaves_a_summary_and_a_colour_table(prefect_api, tiny):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    summary = rebuild(tiny)

    async def of_this_run(key: str):
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
        return [a for a in found if str(a.flow_run_id) == summary["flow_run_id"]]

    [markdown] = asyncio.run(of_this_run("rebuild-summary"))
    assert f"# Feature store version `{summary['version']}`" in markdown.data
    for section in ("## Counts", "## Skipped images", "## Colour words", "| features |"):
        assert section in markdown.data
    [table] = asyncio.run(of_this_run("colour-counts"))
    rows = json.loads(table.data)
    assert table.type == "table" and rows and {"colour", "train", "val", "total"} <= set(rows[0])


def store_root(tiny: dict) -> Path:
    return Path(tiny["store"])


def task_states(summary: dict) -> dict[str, str]:
    """Task name -> state name of the task runs of `summary`'s flow run, once all are final.

    Task run states reach the server as events, so they may lag the flow's return a little.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[summary["flow_run_id"]]))

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=flow_run)

    deadline = time.monotonic() + 30
    while True:
        runs = asyncio.run(read())
        states = {run.name.rsplit("-", 1)[0]: run.state for run in runs}
        if all(s.is_final() for s in states.values()) or time.monotonic() > deadline:
            return {name: state.name for name, state in states.items()}
        time.sleep(0.2)


def test_a_deleted_stage_output_is_rebuilt_despite_the_prefect_cache(prefect_api, tiny):
    first = rebuild(tiny)
    features = Path(tiny["work_dir"]) / "stages" / first["stages"]["features"]["key"]
    shutil.rmtree(features)
    again = rebuild(tiny)
    assert again["executed"] == ["features"]
    assert task_states(again)["features"] == "Completed"
    assert (features / "_SUCCESS").is_file()
    assert again["version"] == first["version"] and not again["published"]


@pytest.mark.parametrize("bad", [{"layer": "layer9"}, {"image_size": 50}])
def test_bad_options_fail_before_any_stage(prefect_api, tiny, bad):
    from colorfeat.errors import UserError

    with pytest.raises(UserError):
        rebuild({**tiny, **bad})


def test_rebuild_can_train_a_colorizer_on_the_published_version(prefect_api, tiny, tmp_path):
    from colortrain.checkpoint import load_checkpoint

    runs = tmp_path / "runs"
    summary = rebuild(tiny, train_dir=str(runs), train_max_steps=2)
    checkpoint = Path(summary["train"]["checkpoint"])
    assert checkpoint == runs / summary["version"] / "film-small" / "checkpoint.pt"
    assert load_checkpoint(checkpoint)["store"]["version"] == summary["version"]
    again = rebuild(tiny, train_dir=str(runs), train_max_steps=2)  # resumes: nothing left
    assert again["train"]["checkpoint"] == str(checkpoint) and again["executed"] == []
