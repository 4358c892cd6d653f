"""Several feature sets in one store version: keys, version ids, adding a set through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from colorfeat.config import PipelineConfig
from colorfeat.errors import UserError
from colorfeat.stages import stages_for
from colorfeat.stages.plan import preflight
from colorfeat.stages.runner import plan_keys, run_stages
from colorfeat.store import schema

COLORFEAT = str(Path(sys.executable).with_name("colorfeat"))
TINY = ["--source", "synthetic", "--limit", "24", "--image-size", "64", "--weights", "none"]
TINY += ["--backbone", "resnet18", "--device", "cpu"]


def config(tmp_path: Path, layer: str | list[str]) -> PipelineConfig:
    return PipelineConfig.from_options(
        source="synthetic", store=str(tmp_path / "store"), work_dir=str(tmp_path / "work"),
        limit=24, image_size=64, backbone="resnet18", weights="none", device="cpu", layer=layer,
    ).resolved()  # fmt: skip


def test_each_layer_is_a_features_stage_keyed_by_its_trunk_alone(tmp_path):
    one = config(tmp_path, ["layer2"])
    two = config(tmp_path, ["layer2", "layer3"])
    swapped = config(tmp_path, ["layer3", "layer2"])
    alone3 = config(tmp_path, "layer3")
    assert one.to_options()["layer"] == "layer2" and two.to_options()["layer"] == [
        "layer2",
        "layer3",
    ]
    assert PipelineConfig.from_options(**two.to_options()) == two
    assert PipelineConfig.from_dict(two.to_dict()) == two
    assert [t.name for t in two.trunks] == ["resnet18.layer2", "resnet18.layer3"]
    assert list(stages_for(two))[-3:] == ["features", "features:resnet18.layer3", "publish"]
    assert stages_for(two)["publish"].reads[-2:] == ("features", "features:resnet18.layer3")

    k1, k2, ks = (plan_keys(c, "src") for c in (one, two, swapped))
    k3 = plan_keys(alone3, "src")
    assert k2["features"] == k1["features"] == ks["features:resnet18.layer2"]
    assert k2["features:resnet18.layer3"] == k3["features"] == ks["features"]
    assert {k: v for k, v in k2.items() if ":" not in k} == k1  # the other stages are shared


def test_the_version_id_covers_every_set_and_their_order(tmp_path, monkeypatch):
    import colorfeat.sources

    monkeypatch.setattr(colorfeat.sources, "acquired", lambda *a, **k: {"identity": "src"})
    ids = [
        preflight(config(tmp_path, layers)).version
        for layers in (["layer2"], ["layer2", "layer3"], ["layer3", "layer2"], ["layer3"])
    ]
    assert len(set(ids)) == 4


def test_a_layer_named_twice_is_refused(tmp_path):
    with pytest.raises(UserError, match="--layer names each feature set once"):
        config(tmp_path, ["layer2", "layer2"])


def colorfeat(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run(
        [COLORFEAT, *args], env=env, capture_output=True, text=True, timeout=300
    )  # fmt: skip


def _files(version: Path) -> dict[str, os.stat_result]:
    return {str(p.relative_to(version)): p.stat() for p in version.rglob("*") if p.is_file()}


def test_adding_a_layer_publishes_a_version_sharing_every_unchanged_array(tmp_path):
    store, work = tmp_path / "store", tmp_path / "work"
    where = ["--store", str(store), "--work-dir", str(work)]
    # the first version as a library user builds it (no Prefect, in this process)
    old = Path(run_stages(config(tmp_path, "layer2").resolved()).version["path"])

    added = colorfeat(tmp_path, "run", *TINY, *where, "--layer", "layer2", "--layer", "layer3")
    assert added.returncode == 0, added.stderr[-3000:]
    new = Path(added.stdout.splitlines()[-1])
    assert new != old and (store / "LATEST").read_text().strip() == new.name
    assert "reusing 7 of 8 stages" in added.stderr
    run = json.loads((work / "runs.jsonl").read_text().splitlines()[-1])
    assert [s for s in run["executed"] if s != "publish"] == ["features:resnet18.layer3"]

    attrs = json.loads((new / "zarr.json").read_text())["attributes"]
    assert attrs["features"] == ["resnet18.layer2", "resnet18.layer3"]
    before, after = _files(old), _files(new)
    own = {"zarr.json", schema.MANIFEST_FILE}  # each version's own root and manifest
    shared = set(before) - own
    assert shared <= set(after)
    for rel in shared:  # the very same file on disk, not a copy
        assert before[rel].st_ino == after[rel].st_ino and after[rel].st_nlink >= 2, rel
    fresh = set(after) - shared - own
    assert fresh and all("/features/resnet18.layer3/" in f or "features/zarr" in f for f in fresh)
