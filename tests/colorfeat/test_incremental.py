"""Rebuilds cost what changed: each kind of change decodes and extracts only the pictures it
touches, shares every unchanged chunk with the previous build, and gives the same pictures, byte
for byte, as a build from scratch of the same source."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from benchmarks import cocolike
from colorfeat import reuse
from colorfeat.config import BackboneConfig, PipelineConfig
from colorfeat.stages import images as images_module
from colorfeat.stages.runner import run_stages
from colorfeat.store import codecs, schema
from colorfeat.store.verification import verify

FEATURES = "resnet18.layer2"
ANNOTATIONS = "annotations/captions_train2014.json"


def _small_chunks(mp: pytest.MonkeyPatch) -> None:
    """Chunks of a few pictures, so that 50 pictures span many of them."""
    mp.setattr(images_module, "RGB_CHUNK_BYTES", 4 * 32 * 32 * 3)  # rgb: 4 rows
    mp.setattr(images_module, "TARGET_CHUNK_BYTES", 2048)  # ab_bins: 16 rows
    mp.setattr(codecs, "TARGET_CHUNK_BYTES", 4 * 128 * 4 * 4 * 2)  # features: 4 rows


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    _small_chunks(monkeypatch)


def config(src: Path, work: Path) -> PipelineConfig:
    return PipelineConfig(
        source=str(src), store=str(work / "store"), work_dir=str(work), device="cpu",
        backbone=BackboneConfig(backbone="resnet18", weights="none", image_size=32),
        precision="fp32", compile_trunk=False,
    )  # fmt: skip


def build(src: Path, work: Path):
    return run_stages(config(src, work), until="features").results


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A COCO-layout source of 40 + 10 pictures and its first build (shared, copied per test)."""
    base = tmp_path_factory.mktemp("first")
    cocolike.generate(base / "src", n_train=40, n_val=10, seed=0)
    with pytest.MonkeyPatch.context() as mp:
        _small_chunks(mp)
        build(base / "src", base / "work")
    return base


@pytest.fixture
def copy(first, tmp_path):
    """The source and work dir of the first build, copied with their modification times and
    hard links (`cp -a`: the store's versions share their files with the stage outputs)."""
    for name in ("src", "work"):
        subprocess.run(["cp", "-a", str(first / name), str(tmp_path / name)], check=True)
    for done in (tmp_path / "work" / "stages").glob("*/_SUCCESS"):  # results name their paths
        done.write_text(done.read_text().replace(str(first), str(tmp_path)))
    return tmp_path


def candidates(results) -> dict[str, dict[int, str]]:
    """The captions stage's candidates per split: image id -> file."""
    doc = json.loads(Path(results["captions"]["path"]).read_text())
    return {s: {c["image_id"]: c["file"] for c in cands} for s, cands in doc["splits"].items()}


def _annotations(src: Path) -> dict:
    return json.loads((src / ANNOTATIONS).read_text())


def add_pictures(src: Path, cands: dict) -> None:
    """Six more train pictures (the first 40 keep their bytes; every file is written again)."""
    cocolike.generate(src, n_train=46, n_val=10, seed=0)


def remove_pictures(src: Path, cands: dict) -> set:
    doc = _annotations(src)
    gone = set(list(cands["train"])[2:4])
    doc["images"] = [i for i in doc["images"] if i["id"] not in gone]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] not in gone]
    (src / ANNOTATIONS).write_text(json.dumps(doc))
    return set()


def edit_pictures(src: Path, cands: dict) -> set:
    """Two stored train pictures upside down: new bytes, same file names."""
    edited = list(cands["train"].items())[4:6]
    for _, file in edited:
        path = src / file
        cv2.imwrite(str(path), cv2.imread(str(path))[::-1])
    return {("train", i) for i, _ in edited}


def edit_captions(src: Path, cands: dict) -> set:
    """Words added to the captions of three stored pictures: the same pictures, new tokens."""
    doc = _annotations(src)
    edited = set(list(cands["train"])[:3])
    for a in doc["annotations"]:
        if a["image_id"] in edited:
            a["caption"] += " on a sunny afternoon"
    (src / ANNOTATIONS).write_text(json.dumps(doc))
    return set()


CHANGES = {
    "add": add_pictures,
    "remove": remove_pictures,
    "edit": edit_pictures,
    "captions": edit_captions,
}


def per_picture(results) -> dict[tuple[str, int], dict]:
    """Every stored picture's arrays and captions, by (split, image id)."""
    images = zarr.open_group(results["images"]["path"], mode="r")
    feats = zarr.open_group(results["features"]["path"], mode="r")
    vocab = json.loads(Path(results["vocab"]["path"]).read_text())
    out = {}
    for split in ("train", "val"):
        g = images[split]
        owner = g[schema.CAPTION_IMAGE_INDEX][:]
        tokens = g[schema.CAPTION_TOKENS][:]
        texts = g[schema.CAPTION_TEXT][:]
        features = feats[split][FEATURES][:].view(np.uint16)
        for row, image_id in enumerate(g["image_id"][:]):
            mine = owner == row
            out[split, int(image_id)] = {
                "rgb": g["rgb"][row].tobytes(),
                "ab_bins": g["ab_bins"][row].tobytes(),
                "features": features[row].tobytes(),
                "captions": [str(t) for t in texts[mine]],
                "words": [[vocab[i] for i in t if i] for t in tokens[mine]],
            }
    return out


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_rebuild_does_only_the_changed_pictures_and_equals_a_build_from_scratch(copy, change):
    before = build(copy / "src", copy / "work")  # reused: nothing to do
    touched = CHANGES[change](copy / "src", candidates(before))
    after = build(copy / "src", copy / "work")
    if touched is None:  # new pictures: the new candidates
        old, new = candidates(before), candidates(after)
        touched = {(s, i) for s in new for i in new[s] if i not in old.get(s, {})}
    assert touched or change in ("remove", "captions")
    scratch = build(copy / "src", copy / "scratch")
    assert per_picture(after) == per_picture(scratch)
    counts = after["images"]["counts"]
    assert sum(counts[s]["decoded"] for s in counts) == len(touched), counts
    assert after["features"]["extracted"] == len(touched)
    assert after["features"]["reused"] == sum(counts[s]["images"] for s in counts) - len(touched)
    # The order rule: rows kept from the previous build stay where they were.
    kept = zarr.open_group(before["images"]["path"], mode="r")["train"]["image_id"][:]
    rows = zarr.open_group(after["images"]["path"], mode="r")["train"]["image_id"][:]
    moved = [r for r, i in enumerate(kept) if r < len(rows) and rows[r] != i]
    assert len(moved) <= {"remove": 2}.get(change, 0)
    if change in ("captions", "remove"):  # no picture is new
        assert after["features"]["chunks_written"] <= (2 * 2 if change == "remove" else 0)
        assert sum(counts[s]["chunks_written"] for s in counts) <= (8 if change == "remove" else 0)


def test_unchanged_chunks_are_the_same_files_as_the_previous_version(copy):
    before = run_stages(config(copy / "src", copy / "work"))
    edit_pictures(copy / "src", candidates(before.results))
    after = run_stages(config(copy / "src", copy / "work"))
    v1, v2 = Path(before.version["path"]), Path(after.version["path"])
    assert v1 != v2
    shared = changed = 0
    for split in ("train", "val"):
        for name in (f"{split}/rgb", f"{split}/ab_bins", f"{split}/features/{FEATURES}"):
            old, new = zarr.open_group(v1, mode="r")[name], zarr.open_group(v2, mode="r")[name]
            for c in range(-(-new.shape[0] // new.chunks[0])):
                a, b = reuse.chunk_file(old, c), reuse.chunk_file(new, c)
                same = a.is_file() and a.stat().st_ino == b.stat().st_ino
                shared += same
                changed += not same
                if not same and a.is_file() and b.is_file():
                    assert a.read_bytes() != b.read_bytes() or name.endswith("ab_bins")
    # Two edited train pictures touch at most one chunk of each train array.
    assert changed <= 3 and shared >= 12, (shared, changed)
    assert after.results["images"]["previous"] == Path(before.results["images"]["path"]).parent.name
    # The manifest took the shared files' CRCs from the previous version's: they still hold.
    assert verify(v2).problems == [] and verify(v1).problems == []


def test_order_rule():
    assert reuse.order_rows(None, [3, 1, 2]) == [3, 1, 2]
    # holes filled by new pictures first, then by the last rows; new ones left go last
    assert reuse.order_rows([1, 2, 3, 4], [1, 3, 4, 9]) == [1, 9, 3, 4]
    assert reuse.order_rows([1, 2, 3, 4, 5], [1, 3, 5]) == [1, 5, 3]
    assert reuse.order_rows([1, 2], [2, 1, 7, 8]) == [1, 2, 7, 8]
    assert reuse.order_rows([1, 2, 3], []) == []


def test_a_rebuild_killed_while_assembling_resumes_to_the_same_bytes(copy, monkeypatch):
    edit_pictures(copy / "src", candidates(build(copy / "src", copy / "work")))
    real = reuse.assemble
    calls = {"n": 0}

    def dies_once(out, *args, **kw):
        if "features" in str(out.store.root) and calls["n"] == 0:
            calls["n"] += 1
            real(out, *args, **kw)  # half the work is on disk
            raise KeyboardInterrupt
        return real(out, *args, **kw)

    monkeypatch.setattr(reuse, "assemble", dies_once)
    with pytest.raises(KeyboardInterrupt):
        build(copy / "src", copy / "work")
    resumed = build(copy / "src", copy / "work")
    assert resumed["features"]["extracted"] == 0  # the fresh features were kept on disk
    assert per_picture(resumed) == per_picture(build(copy / "src", copy / "scratch"))
