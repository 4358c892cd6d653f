"""Store versions: layout, atomic publishing under kills and concurrent readers, reader API, CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from colorfeat import store
from colorfeat.config import BackboneConfig
from colorfeat.constants import STORE_SCHEMA
from colorfeat.errors import UserError
from colorfeat.lab import ab_grid
from colorfeat.stages.vocab import load_vocab
from colorfeat.store import (
    FEATURE_ATTRS,
    LATEST,
    describe_version,
    list_versions,
    open_store,
    render_info,
    render_versions,
)
from colorfeat.trunk.extract import features_stage
from flows.cli.colorfeat import app

sys.path.insert(0, str(Path(__file__).parent))
from conftest_store import make_stage_parts, publish_parts, version_attrs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HERE = str(Path(__file__).parent)
R18 = BackboneConfig(backbone="resnet18", layer="layer2", weights="none", image_size=32)
R50 = BackboneConfig(backbone="resnet50", layer="layer3", weights="none", image_size=32)
DESIGN_ATTRS = {
    "schema",
    "created",
    "source",
    "config",
    "config_hash",
    "lexicon",
    "counts",
    "skipped",
}


@pytest.fixture(scope="module")
def store_parts(tmp_path_factory) -> dict:
    """Stage outputs of a tiny data set, with two feature sets."""
    work = tmp_path_factory.mktemp("work")
    parts = make_stage_parts(work)
    feats = [
        features_stage(parts["images"], cfg, work / f"features-{cfg.name}", device="cpu")
        for cfg in (R18, R50)
    ]
    return {**parts, "features": feats}


def variant(parts: dict, tag: str, n_features: int = 1) -> dict:
    """The same parts under other stage keys: a different version id."""
    return {
        **parts,
        "features": parts["features"][:n_features],
        "keys": {**parts["keys"], "variant": tag},
    }


def test_published_version_has_the_design_layout(store_parts, tmp_path) -> None:
    parts = variant(store_parts, "a", n_features=2)
    result = publish_parts(tmp_path / "root", parts)
    assert result["published"]
    assert (tmp_path / "root" / LATEST).read_text().strip() == result["version"]
    v = open_store(tmp_path / "root")
    v.validate()
    assert v.version == result["version"] and v.splits == ["train", "val"]
    assert DESIGN_ATTRS <= set(v.attrs) and v.attrs["schema"] == STORE_SCHEMA
    assert v.vocab_tokens == load_vocab(parts["vocab"])
    np.testing.assert_array_equal(v.embeddings, np.load(parts["embeddings"]["path"]))
    np.testing.assert_array_equal(v.lab_grid, ab_grid())
    assert v.lab_prior.dtype == np.float64 and v.lab_weights.dtype == np.float32
    assert v.rebalance == {"alpha": 1.0, "gamma": 0.5}

    src = zarr.open_group(parts["images"]["path"], mode="r")
    for split, n in (("train", 12), ("val", 5)):
        assert v.array(split, "rgb").shape == (n, 32, 32, 3)
        assert v.array(split, "ab_bins").dtype == np.uint16
        assert v.array(split, "image_id").dtype == np.int64
        np.testing.assert_array_equal(v.array(split, "rgb")[:], src[f"{split}/rgb"][:])
        texts = v.array(split, "captions/text")[:]
        np.testing.assert_array_equal(texts, src[f"{split}/captions/text"][:])
        assert v.dask(split, "captions/tokens").shape == (2 * n, 8)
    assert v.feature_names() == ["resnet18.layer2", "resnet50.layer3"]
    assert v.features("train").shape == (12, 128, 4, 4)
    assert v.features("val", "resnet50.layer3").shape == (5, 1024, 2, 2)
    for name in v.feature_names():
        assert set(FEATURE_ATTRS) <= set(v.features("train", name).attrs)
    assert v.dask("train", "features/resnet18.layer2").mean().compute() > 0

    # chunk files are the stage outputs' own files (hardlinked), not re-encoded
    feat = (
        Path(parts["features"][0]["path"])
        / "train"
        / "resnet18.layer2"
        / "c"
        / "0"
        / "0"
        / "0"
        / "0"
    )
    pub = Path(v.path) / "train" / "features" / "resnet18.layer2" / "c" / "0" / "0" / "0" / "0"
    assert pub.read_bytes() == feat.read_bytes() and pub.stat().st_ino == feat.stat().st_ino


def test_unchanged_rebuild_reuses_its_version_and_moves_latest_back(store_parts, tmp_path) -> None:
    root = str(tmp_path / "root")
    a = publish_parts(root, variant(store_parts, "a"))
    b = publish_parts(root, variant(store_parts, "b"))
    assert a["version"] != b["version"] and open_store(root).version == b["version"]
    again = publish_parts(root, variant(store_parts, "a"))
    assert again == {**a, "published": False}
    assert open_store(root).version == a["version"]
    listed = list_versions(root)
    assert sorted(d["version"] for d in listed) == sorted([a["version"], b["version"]])
    assert [d["latest"] for d in listed if d["version"] == a["version"]] == [True]
    assert "* = LATEST" in render_versions(listed)


def test_a_version_path_opens_directly_and_bad_paths_are_one_line_errors(store_parts, tmp_path):
    root = tmp_path / "root"
    r = publish_parts(root, variant(store_parts, "a"))
    assert open_store(r["path"]).version == r["version"]
    for bad, message in [
        (tmp_path / "nowhere", "no such directory"),
        (tmp_path, "not a feature store root"),
    ]:
        with pytest.raises(UserError, match=message):
            open_store(bad)
    (tmp_path / "empty" / "versions").mkdir(parents=True)
    with pytest.raises(UserError, match="nothing has been published"):
        open_store(tmp_path / "empty")
    (tmp_path / "empty" / LATEST).write_text("0123456789abcdef\n")
    with pytest.raises(UserError, match="LATEST names version '0123456789abcdef'"):
        open_store(tmp_path / "empty")
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    other.attrs["schema"] = "something/9"
    with pytest.raises(UserError, match="schema 'something/9'"):
        open_store(tmp_path / "other.zarr")


def test_cli_store_info_and_ls(store_parts, tmp_path) -> None:
    root = tmp_path / "root"
    r = publish_parts(root, variant(store_parts, "a", n_features=2))
    runner = CliRunner()
    info = runner.invoke(app, ["store", "info", str(root)])
    assert info.exit_code == 0, info.output
    assert r["version"] in info.output and "train/features/resnet50.layer3" in info.output
    as_json = json.loads(runner.invoke(app, ["store", "info", str(root), "--json"]).output)
    assert as_json["splits"]["train"]["images"] == 12
    assert as_json["features"]["resnet18.layer2"]["weights"] == "none:seed=0"
    assert as_json == json.loads(json.dumps(describe_version(open_store(root))))
    assert r["version"] in render_info(describe_version(open_store(root)))
    ls = runner.invoke(app, ["store", "ls", str(root)])
    assert ls.exit_code == 0 and f"* {r['version']}" in ls.output


def test_cli_store_info_on_a_bad_path_is_a_clear_error(tmp_path) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("colorfeat")), "store", "info", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("colorfeat: error: ") and "no such directory" in proc.stderr


def test_a_failing_build_changes_nothing(store_parts, tmp_path) -> None:
    root = tmp_path / "root"
    a = publish_parts(root, variant(store_parts, "a"))
    bad_emb = tmp_path / "bad.npy"
    np.save(bad_emb, np.zeros((3, 16), np.float32))
    bad = {**variant(store_parts, "b"), "embeddings": {"path": str(bad_emb)}}
    with pytest.raises(UserError, match="embeddings"):
        publish_parts(root, bad)
    assert open_store(root).version == a["version"]
    assert sorted(p.name for p in (root / "versions").iterdir()) == [a["version"]]


_SLOW_PUBLISH = """
import json, sys, time
sys.path.insert(0, sys.argv[4])
from colorfeat.store import parts as store_parts
from conftest_store import publish_parts

link = store_parts.link_tree
def slow_link(src, dst):
    link(src, dst)
    print("BUILDING", flush=True)
    time.sleep(float(sys.argv[3]))

store_parts.link_tree = slow_link
for parts in json.loads(sys.argv[2]):
    print(json.dumps(publish_parts(sys.argv[1], parts, {"config": {}})), flush=True)
"""


def _slow_publish(root: Path, parts: list[dict], delay: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _SLOW_PUBLISH, str(root), json.dumps(parts), str(delay), HERE],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_killed_build_leaves_latest_and_published_versions_intact(store_parts, tmp_path) -> None:
    root = tmp_path / "root"
    a = publish_parts(root, variant(store_parts, "a"))
    before = {p: p.read_bytes() for p in Path(a["path"]).rglob("*") if p.is_file()}
    child = _slow_publish(root, [variant(store_parts, "b")], delay=30)
    assert child.stdout.readline().strip() == "BUILDING"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()

    assert (root / LATEST).read_text().strip() == a["version"]
    v = open_store(root)
    v.validate()
    assert v.version == a["version"]
    assert {p: p.read_bytes() for p in Path(a["path"]).rglob("*") if p.is_file()} == before
    leftovers = [p.name for p in (root / "versions").iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1
    assert [d["version"] for d in list_versions(str(root))] == [a["version"]]

    b = publish_parts(root, variant(store_parts, "b"))  # cleans the leftover
    assert sorted(p.name for p in (root / "versions").iterdir()) == sorted(
        [a["version"], b["version"]]
    )
    open_store(root).validate()


def test_a_reader_during_publishing_always_sees_a_complete_version(store_parts, tmp_path) -> None:
    root = tmp_path / "root"
    first = publish_parts(root, variant(store_parts, "a"))
    child = _slow_publish(root, [variant(store_parts, t) for t in ("b", "c", "d")], delay=0.1)
    seen, failures = [], []

    def read_until_done() -> None:
        while child.poll() is None:
            try:
                v = open_store(root)
                v.validate()
                assert v.features("train")[:].shape == (12, 128, 4, 4)
                seen.append(v.version)
            except Exception as exc:  # noqa: BLE001 - collected and reported below
                failures.append(repr(exc))

    reader = threading.Thread(target=read_until_done)
    reader.start()
    published = [json.loads(line) for line in child.stdout if line.startswith("{")]
    child.wait(timeout=120)
    reader.join()
    child.stdout.close()
    assert child.returncode == 0
    assert not failures, failures[:3]
    assert seen and seen[0] == first["version"] and len(set(seen)) >= 2
    assert set(seen) <= {first["version"]} | {p["version"] for p in published}
    assert open_store(root).version == published[-1]["version"]


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_docs_reading_example_runs_against_a_store(store_parts, tmp_path) -> None:
    publish_parts(tmp_path / "store", variant(store_parts, "a", 2))
    blocks = _python_blocks((REPO / "docs" / "feature-store.md").read_text())
    assert blocks, "docs/feature-store.md has no python example"
    for code in blocks:
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
    assert "features" in proc.stdout
    # the example imports nothing from this project
    assert not re.search(r"^\s*(from|import)\s+col", "\n".join(blocks), flags=re.M)


def test_the_real_stages_publish_a_valid_version(tmp_path) -> None:
    from colorfeat.config import PipelineConfig
    from colorfeat.sources import acquire
    from colorfeat.stages.captions import captions_stage
    from colorfeat.stages.embeddings import embeddings_stage
    from colorfeat.stages.images import images_stage
    from colorfeat.stages.priors import priors_stage
    from colorfeat.stages.vocab import vocab_stage

    work = tmp_path / "work"
    src = acquire("synthetic", work, limit=16, seed=0, progress=False)
    captions = captions_stage(src, PipelineConfig().lexicon, work / "captions", limit=16)
    vocab = vocab_stage(captions, work / "vocab")
    vectors = embeddings_stage(captions, vocab, work / "embeddings", dim=8)
    images = images_stage(src, captions, vocab, work / "images", image_size=32)
    priors = priors_stage(images, work / "priors")
    cfg = BackboneConfig(backbone="resnet18", layer="layer2", weights="none", image_size=32)
    features = features_stage(images, cfg, work / "features", device="cpu")
    parts = {
        "images": images, "vocab": vocab, "embeddings": vectors, "priors": priors,
        "features": [features], "keys": {"source": src["identity"], "test": "real-stages"},
    }  # fmt: skip
    counts = {"images": images["counts"], "captions": captions["counts"]}
    result = publish_parts(tmp_path / "store", parts, version_attrs(counts))
    v = open_store(tmp_path / "store")
    v.validate()
    assert v.version == result["version"]
    for split, n in images["splits"].items():
        assert n > 0 and v.features(split).shape == (n, 128, 4, 4)
        assert v.array(split, "rgb").shape == (n, 32, 32, 3)
        lengths = v.array(split, "captions/length")[:]
        assert v.array(split, "captions/image_index")[:].max() == n - 1 and lengths.min() >= 1
    assert v.vocab_tokens == json.loads(Path(vocab["path"]).read_text())
    np.testing.assert_array_equal(v.lab_prior, np.load(Path(priors["path"]) / "prior.npy"))


def test_a_version_broken_underneath_after_its_check_is_not_published(
    store_parts, tmp_path, monkeypatch
) -> None:
    root = tmp_path / "root"
    a = publish_parts(root, variant(store_parts, "a"))
    flush = store.publishing.fsync_tree

    def lose_a_chunk(path: Path) -> None:  # as if someone removed files of the staging folder
        chunks = sorted(p for p in (Path(path) / "train" / "rgb" / "c").rglob("*") if p.is_file())
        chunks[0].unlink()
        flush(path)

    monkeypatch.setattr(store.publishing, "fsync_tree", lose_a_chunk)
    with pytest.raises(UserError, match=r"train/rgb lacks 1 chunks"):
        publish_parts(root, variant(store_parts, "b"))
    assert (root / LATEST).read_text().strip() == a["version"]
    assert sorted(p.name for p in (root / "versions").iterdir()) == [a["version"]]


def test_stray_files_among_stage_chunks_stay_out_of_the_version(store_parts, tmp_path) -> None:
    images = tmp_path / "images.zarr"
    shutil.copytree(store_parts["images"]["path"], images)
    chunk_dir = next(p.parent for p in (images / "train" / "rgb").rglob("*") if p.is_file())
    strays = {".nfs000000000123", "0.tmp", "0.1a2b.partial"}
    for name in strays:
        (chunk_dir / name).write_bytes(b"half")
    parts = {**variant(store_parts, "strays"), "images": {**store_parts["images"]}}
    parts["images"]["path"] = str(images)
    r = publish_parts(tmp_path / "root", parts)
    open_store(r["path"]).validate()
    assert not {p.name for p in Path(r["path"]).rglob("*")} & strays
