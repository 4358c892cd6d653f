"""Karpathy split files as a source: their splits become the store's, pictures found beside them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from colorfeat.constants import PRIORS_DIR
from colorfeat.errors import UserError
from colorfeat.sources import acquire, acquired, check, estimate, kind_of
from colorfeat.stages.captions import captions_stage, load_captions

LEXICON = PRIORS_DIR / "color_words.txt"


def _entry(i: int, split: str, name: str, **more) -> dict:
    sentences = [{"raw": f"a red thing number {i}", "tokens": ["a"]}, {"raw": "a plain thing"}]
    return {"filename": name, "split": split, "sentences": sentences, "imgid": i, **more}


def write_karpathy(folder: Path, kit, entries: list[dict], pictures: list[str]) -> Path:
    """A split file `dataset_test.json` in `folder`, with the named pictures written there."""
    for i, rel in enumerate(pictures):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(kit.jpeg_bytes(kit.colour_picture(i)))
    path = folder / "dataset_test.json"
    path.write_text(json.dumps({"dataset": "test", "images": entries}))
    return path


@pytest.fixture
def karpathy(tmp_path, kit) -> Path:
    folder = tmp_path / "flickr"
    folder.mkdir()
    entries = [
        _entry(0, "train", "a.jpg", cocoid=100),
        _entry(1, "restval", "b.jpg", filepath="val2014", cocoid=101),
        _entry(2, "val", "c.jpg", cocoid=102),
        _entry(3, "test", "d.jpg", cocoid=103),
        _entry(4, "test", "nowhere.jpg", cocoid=104),  # no such picture
        _entry(5, "train", "../outside.jpg", cocoid=105),  # leaves the folder
        _entry(6, "extra", "a.jpg", cocoid=106),  # no such split
        {**_entry(7, "train", "a.jpg", cocoid=107), "sentences": []},  # no caption
        "not an entry",
    ]
    (tmp_path / "outside.jpg").write_bytes(kit.jpeg_bytes(kit.colour_picture(9)))
    write_karpathy(folder, kit, entries, ["images/a.jpg", "val2014/b.jpg", "c.jpg", "images/d.jpg"])
    return folder


def test_the_four_split_names_become_three_store_splits(karpathy, tmp_path):
    path = karpathy / "dataset_test.json"
    assert kind_of(str(path)).name == kind_of(str(karpathy)).name == "karpathy"
    check(str(path))
    assert acquired(str(path), tmp_path / "work") is None
    src = acquire(str(path), tmp_path / "work")
    assert src["splits"] == {"test": "test", "train": "train", "val": "val"}
    assert src["counts"]["pictures"] == {"test": 1, "train": 2, "val": 1}
    assert src["counts"]["skipped"] == {
        "bad entry": 1, "missing picture": 1, "no caption": 1, "outside source": 1,
        "unknown split": 1,
    }  # fmt: skip
    assert acquired(str(karpathy), tmp_path / "work") == src
    assert estimate(str(path), src).pictures == 4
    root = Path(src["root"])
    train = json.loads((root / "annotations" / "captions_train.json").read_text())
    assert [i["id"] for i in train["images"]] == [100, 101]  # the cocoids; restval is train
    first = root / "train" / train["images"][0]["file_name"]
    assert os.path.samefile(first, karpathy / "images" / "a.jpg")  # linked, not copied
    caps = captions_stage(src, LEXICON, tmp_path / "captions")
    doc = load_captions(caps)
    assert sorted(doc["splits"]) == ["test", "train", "val"]
    assert doc["splits"]["test"][0]["captions"] == ["a red thing number 3"]


def test_the_identity_follows_captions_and_pictures(karpathy, tmp_path):
    path = str(karpathy / "dataset_test.json")
    first = acquire(path, tmp_path / "work")["identity"]
    assert acquire(path, tmp_path / "work")["identity"] == first
    picture = karpathy / "c.jpg"
    os.utime(picture, ns=(1, picture.stat().st_mtime_ns + 1))
    second = acquire(path, tmp_path / "work")["identity"]
    assert second != first
    doc = json.loads((karpathy / "dataset_test.json").read_text())
    doc["images"][0]["sentences"][0]["raw"] = "a blue thing"
    (karpathy / "dataset_test.json").write_text(json.dumps(doc))
    assert acquire(path, tmp_path / "work")["identity"] not in (first, second)


def test_a_bad_split_file_is_one_line(tmp_path, kit):
    missing = tmp_path / "dataset_none.json"
    with pytest.raises(UserError, match="Karpathy split file not found"):
        check(str(missing))
    os.mkfifo(missing)
    with pytest.raises(UserError, match="is not a regular file"):
        check(str(missing))
    missing.unlink()
    missing.write_text('{"images": 3}')
    with pytest.raises(UserError, match="not a Karpathy split file"):
        acquire(str(missing), tmp_path / "work")
    missing.write_text(json.dumps({"images": [_entry(0, "train", "gone.jpg")]}))
    with pytest.raises(UserError, match="gave no picture with a caption"):
        acquire(str(missing), tmp_path / "work")
    assert not list((tmp_path / "work" / "sources").glob("*/_SUCCESS"))  # nothing complete
