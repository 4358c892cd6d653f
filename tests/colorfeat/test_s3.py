"""Store roots on S3: publish, read back, list, interrupted uploads; against a local moto server
(the `s3_endpoint` fixture of conftest.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from colorfeat.config import BackboneConfig
from colorfeat.store import list_versions, open_store, publishing
from colorfeat.trunk.extract import features_stage
from flows.cli.colorfeat import app

sys.path.insert(0, str(Path(__file__).parent))
from conftest_store import make_stage_parts, publish_parts  # noqa: E402


@pytest.fixture(scope="module")
def store_parts(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("work")
    parts = make_stage_parts(work)
    cfg = BackboneConfig(backbone="resnet18", layer="layer2", weights="none", image_size=32)
    return {**parts, "features": [features_stage(parts["images"], cfg, work / "f", device="cpu")]}


def test_s3_round_trip(s3_endpoint, store_parts, tmp_path) -> None:
    root = "s3://colorfeat-test/round-trip"
    result = publish_parts(root, store_parts)
    assert result["published"] and result["path"] == f"{root}/versions/{result['version']}"
    local = publish_parts(str(tmp_path / "local"), store_parts)
    assert local["version"] == result["version"]

    remote, here = open_store(root), open_store(tmp_path / "local")
    remote.validate()
    assert remote.version == result["version"] and remote.splits == here.splits
    for split in remote.splits:
        for name in ("rgb", "ab_bins", "captions/text", "features/resnet18.layer2"):
            np.testing.assert_array_equal(remote.array(split, name)[:], here.array(split, name)[:])
        assert remote.dask(split, "features/resnet18.layer2").sum().compute() > 0
    assert remote.vocab_tokens == here.vocab_tokens

    assert publish_parts(root, store_parts)["published"] is False
    [listed] = list_versions(root)
    assert listed["latest"] and listed["version"] == result["version"] and listed["bytes"] > 0


def test_s3_with_explicit_storage_options(s3_endpoint, store_parts, monkeypatch) -> None:
    root = "s3://colorfeat-test/explicit"
    publish_parts(root, store_parts)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    v = open_store(root, storage_options=options)
    v.validate()
    assert v.features("train").shape == (12, 128, 4, 4)


def test_s3_cli_info_and_ls(s3_endpoint, store_parts) -> None:
    root = "s3://colorfeat-test/cli"
    r = publish_parts(root, store_parts)
    runner = CliRunner()
    info = runner.invoke(app, ["store", "info", root, "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["version"] == r["version"]
    ls = runner.invoke(app, ["store", "ls", root])
    assert ls.exit_code == 0 and f"* {r['version']}" in ls.output
    missing = runner.invoke(app, ["store", "info", "s3://colorfeat-test/nothing-here"])
    assert missing.exit_code == 1


def test_interrupted_upload_is_not_a_version(s3_endpoint, store_parts, monkeypatch, tmp_path):
    root = "s3://colorfeat-test/interrupted"
    old = publish_parts(root, {**store_parts, "keys": {"old": 1}})
    upload = publishing._upload

    def upload_all_but_the_root_metadata(fs, staging, target):
        (staging / "zarr.json").rename(tmp_path / "held-back.json")
        try:
            upload(fs, staging, target)
        except FileNotFoundError:
            pass
        raise ConnectionError("connection lost")

    monkeypatch.setattr(publishing, "_upload", upload_all_but_the_root_metadata)
    with pytest.raises(ConnectionError):
        publish_parts(root, store_parts)
    monkeypatch.setattr(publishing, "_upload", upload)

    v = open_store(root)
    v.validate()
    assert v.version == old["version"]
    assert [d["version"] for d in list_versions(root)] == [old["version"]]
    new = publish_parts(root, store_parts)
    assert new["published"] and open_store(root).version == new["version"]
    open_store(root).validate()
