"""Chunk manifests: recorded when a version is published, read back by `verify`, and every read
raising one line for a missing or damaged chunk; LATEST checked on reading; ids pinned."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from colorfeat.config import BackboneConfig, PipelineConfig
from colorfeat.errors import UserError
from colorfeat.stages.captions import captions_stage
from colorfeat.stages.images import images_stage
from colorfeat.store import (
    LATEST,
    ChunkError,
    describe_version,
    list_versions,
    open_store,
    render_info,
    schema,
    verify,
    version_id,
)
from colorfeat.trunk.extract import features_stage
from flows.cli.colorfeat import app

sys.path.insert(0, str(Path(__file__).parent))
from conftest_store import make_stage_parts, publish_parts  # noqa: E402

R18 = BackboneConfig(backbone="resnet18", layer="layer2", weights="none", image_size=32)
FEATURES = schema.features_path("train", R18.name)
RGB = schema.split_path("train", schema.RGB)


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("work")
    got = make_stage_parts(work)
    return {**got, "features": [features_stage(got["images"], R18, work / "f", device="cpu")]}


def _chunk(version: str, array: str) -> Path:
    """The first chunk file of an array of a version."""
    return min(p for p in (Path(version) / array / "c").rglob("*") if p.is_file())


def test_a_version_records_every_chunk_and_verify_reads_them_back(parts, tmp_path) -> None:
    r = publish_parts(tmp_path / "root", parts)
    v = open_store(tmp_path / "root")
    assert v.manifest and all(size > 0 for size, _ in v.manifest.values())
    chunks = [p for p in Path(r["path"]).rglob("*") if p.is_file() and "/c/" in p.as_posix()]
    assert {p.relative_to(r["path"]).as_posix() for p in chunks} <= set(v.manifest)
    found = verify(tmp_path / "root")
    assert found.ok and found.version == r["version"] and found.files == len(v.manifest)
    assert verify(tmp_path / "root", r["version"]).ok and verify(r["path"]).ok
    with pytest.raises(UserError, match="not a version id"):
        verify(tmp_path / "root", f"../../elsewhere/versions/{r['version']}")


def test_a_missing_chunk_raises_naming_array_and_chunk(parts, tmp_path) -> None:
    r = publish_parts(tmp_path / "root", parts)
    for array in (FEATURES, RGB):
        _chunk(r["path"], array).unlink()  # the version's name only: the stage output stays
    v = open_store(tmp_path / "root")
    with pytest.raises(ChunkError) as exc:
        v.features("train")[:]
    assert str(exc.value) == (
        f"store version {r['path']}: array {FEATURES}, chunk 0.0.0.0: "
        "missing (a version holds every chunk)"
    )
    with pytest.raises(ChunkError, match=f"array {RGB}, chunk 0.0.0.0: missing"):
        v.dask("train", schema.RGB).sum().compute()
    with pytest.raises(UserError, match="lacks 1 chunks"):
        v.validate()
    problems = verify(tmp_path / "root").problems
    assert sorted(problems) == [f"{FEATURES}/c/0/0/0/0: missing", f"{RGB}/c/0/0/0/0: missing"]


def test_a_damaged_chunk_raises_one_line_before_it_is_decoded(parts, tmp_path) -> None:
    r = publish_parts(tmp_path / "root", parts)
    chunk = _chunk(r["path"], FEATURES)
    noise = tmp_path / "noise"
    noise.write_bytes(np.random.default_rng(0).bytes(chunk.stat().st_size))
    os.replace(noise, chunk)  # a new file in the version: the stage output keeps its bytes
    v = open_store(tmp_path / "root")
    with pytest.raises(ChunkError) as exc:
        v.features("train")[:]
    assert "\n" not in str(exc.value)
    assert f"array {FEATURES}, chunk 0.0.0.0: does not match the manifest" in str(exc.value)
    assert verify(tmp_path / "root").problems == [
        f"{FEATURES}/c/0/0/0/0: damaged (CRC-32 differs from the manifest)"
    ]
    assert v.array("train", schema.RGB)[:].shape[0] == 12  # the rest reads as before


def test_a_version_from_before_manifests_opens_and_still_refuses_missing_chunks(parts, tmp_path):
    r = publish_parts(tmp_path / "root", parts)
    root_meta = Path(r["path"]) / "zarr.json"
    meta = json.loads(root_meta.read_text())
    for key in (schema.ATTR_MANIFEST, schema.ATTR_PARTS):
        del meta["attributes"][key]
    root_meta.write_text(json.dumps(meta))
    shutil.rmtree(Path(r["path"]) / schema.MANIFEST_GROUP)
    v = open_store(tmp_path / "root")
    v.validate()
    assert v.manifest is None and v.version == r["version"]
    with pytest.raises(UserError, match="no chunk manifest"):
        verify(tmp_path / "root")
    _chunk(r["path"], RGB).unlink()
    with pytest.raises(ChunkError, match=f"array {RGB}, chunk 0.0.0.0: missing"):
        open_store(tmp_path / "root").array("train", schema.RGB)[:]


def test_latest_naming_a_path_outside_the_root_is_refused(parts, tmp_path) -> None:
    other = publish_parts(tmp_path / "other", parts)
    root = tmp_path / "root"
    publish_parts(root, {**parts, "keys": {"mine": "1"}})
    (root / LATEST).write_text(f"../../other/versions/{other['version']}\n")
    for read in (open_store, list_versions, verify):
        with pytest.raises(UserError, match="not a version id") as exc:
            read(root)
        assert "\n" not in str(exc.value)


def test_store_ls_on_the_versions_folder_names_the_root(parts, tmp_path) -> None:
    root = tmp_path / "root"
    publish_parts(root, parts)
    for command in ("ls", "info"):
        out = CliRunner().invoke(app, ["store", command, str(root / "versions")])
        assert out.exit_code == 1
        assert out.stderr.splitlines() == [
            f"colorfeat: error: not a feature store root: {root / 'versions'} holds its "
            f"versions; use {root}"
        ]


def test_store_info_gives_every_skip_reason_with_its_count(tmp_path) -> None:
    work = tmp_path / "work"
    got = make_stage_parts(work, {"train": 6, "val": 2})
    source = Path(got["acquire"]["root"])
    train = source / "train2014"
    ann = source / "annotations" / "captions_train2014.json"
    doc = json.loads(ann.read_text())
    for i, name in enumerate(["gray0.png", "gray1.png", "broken.png", "absent.png"]):
        doc["images"].append({"id": 90 + i, "file_name": name, "width": 32, "height": 32})
        doc["annotations"].append({"id": 900 + i, "image_id": 90 + i, "caption": "a red kite"})
    for name in ("gray0.png", "gray1.png"):
        Image.fromarray(np.full((32, 32), 128, np.uint8)).save(train / name)
    (train / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    ann.write_text(json.dumps(doc))
    captions = captions_stage(got["acquire"], PipelineConfig().lexicon, work / "captions2")
    images = images_stage(got["acquire"], captions, got["vocab"], work / "images2", image_size=32)
    r = publish_parts(tmp_path / "root", {**got, "captions": captions, "images": images})
    info = describe_version(open_store(r["path"]))
    assert info["skipped_by_reason"] == {"grayscale": 2, "missing file": 1, "truncated": 1}
    assert "skipped   4 pictures: grayscale 2, missing file 1, truncated 1" in render_info(info)
    out = CliRunner().invoke(app, ["store", "info", r["path"]])
    assert out.exit_code == 0 and "grayscale 2, missing file 1, truncated 1" in out.stdout


def test_version_ids_stay_those_of_the_keys_and_feature_names(parts, tmp_path) -> None:
    keys = {"images": "images-test", "vocab": "vocab-test", "embeddings": "emb-test"}
    keys["priors"] = "pri-test"
    r = publish_parts(tmp_path / "root", {**parts, "keys": keys})
    assert r["version"] == version_id({"keys": keys, "features": [{"name": R18.name}]})
    assert r["version"] == "6feab260e524e570"  # as the store published it before parts
