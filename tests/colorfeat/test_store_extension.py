"""A stage that adds an array to the store, registered from this file alone (its function and
its row): published, validated, shown by `store info` and costed by the dry run."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from colorfeat.config import BackboneConfig, PipelineConfig
from colorfeat.errors import UserError
from colorfeat.stages import Context, Cost, Stage, registered
from colorfeat.stages.dryrun import report
from colorfeat.stages.plan import preflight
from colorfeat.stages.runner import run_stages
from colorfeat.store import describe_version, open_store, render_info, schema
from colorfeat.store.parts import Part, linked_split_arrays
from colorfeat.store.schema import ArraySpec

BRIGHTNESS = ArraySpec("brightness", "float32", 1, schema.IMAGE_ROWS)


def mean_brightness(ctx: Context, dtype: str = "float32") -> dict:
    """Each picture's mean RGB value, as `<split>/brightness` of brightness.zarr."""
    images = ctx.inputs["images"]
    src = zarr.open_group(images["path"], mode="r")
    out = zarr.open_group(str(ctx.out_dir / "brightness.zarr"), mode="w")
    for split in images["splits"]:
        rgb = src[schema.split_path(split, schema.RGB)][:]  # (N, S, S, 3)
        mean = rgb.mean(axis=(1, 2, 3)).astype(dtype)  # (N,)
        out.create_array(BRIGHTNESS.where(split), data=mean)
    return {"path": str(ctx.out_dir / "brightness.zarr")}


ROW = Stage(
    "brightness", mean_brightness, reads=("images",), config=lambda c: {}, version=1,
    adds=Part("brightness", linked_split_arrays(BRIGHTNESS), arrays=(BRIGHTNESS,)),
    cost=lambda est: Cost(3600.0, est.pictures * 10**9, est.pictures * 4),
)  # fmt: skip


@pytest.fixture
def config(tmp_path) -> PipelineConfig:
    trunk = BackboneConfig(backbone="resnet18", weights="none", image_size=32)
    return PipelineConfig(
        source="synthetic", store=str(tmp_path / "store"), work_dir=str(tmp_path / "work"),
        limit=10, device="cpu", backbone=trunk,
    )  # fmt: skip


def test_a_registered_stage_is_published_validated_shown_and_costed(config) -> None:
    plain = report(config, preflight(config))
    with registered(ROW):
        costed = report(config, preflight(config))
        run = run_stages(config)
    assert "  brightness runs" in costed and not any("brightness" in line for line in plain)
    assert costed[-1].startswith("estimated time: about 1 h") and "1 h" not in plain[-1]
    work_need = [line for line in costed if line.startswith("disk work dir")]
    assert "needs 9.3 GiB" in work_need[0]  # 10 pictures of 1 GB each

    v = open_store(config.store)
    v.validate()
    assert v.version == run.version["version"] and "brightness" in v.attrs["parts"]
    src = zarr.open_group(run.results["images"]["path"], mode="r")
    for split in v.splits:
        rgb = src[schema.split_path(split, schema.RGB)][:]
        expected = rgb.mean(axis=(1, 2, 3)).astype(np.float32)
        np.testing.assert_array_equal(v.array(split, BRIGHTNESS.path)[:], expected)
    info = describe_version(v)
    assert info["arrays"]["train/brightness"]["part"] == "brightness"
    shown = [line for line in render_info(info).splitlines() if line.startswith("train/bright")]
    assert shown and shown[0].split()[2] == "float32" and shown[0].endswith("brightness")

    # validation checks what the row declares: the same stage writing float64 is not published
    wrong = Stage(
        ROW.name, lambda ctx: mean_brightness(ctx, "float64"), ROW.reads, ROW.config,
        version=2, adds=ROW.adds,
    )  # fmt: skip
    with registered(wrong), pytest.raises(UserError, match="train/brightness is float64"):
        run_stages(config)
    assert open_store(config.store).version == v.version
