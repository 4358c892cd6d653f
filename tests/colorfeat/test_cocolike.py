"""The COCO-like source: layout, determinism, picture sizes and content, caption statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import cocolike
from colorfeat.constants import PRIORS_DIR
from colorfeat.sources.coco import find_splits, read_split
from colorfeat.sources.directory import acquire_dir
from colorfeat.stages.captions import captions_stage, colour_words, load_lexicon, tokenize

N_TRAIN, N_VAL = 4, 2


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cocolike")
    cocolike.generate(root, n_train=N_TRAIN, n_val=N_VAL, seed=3)
    return root


def test_layout_is_read_as_a_coco_source(generated, tmp_path):
    assert find_splits(generated) == {"train2014": "train", "val2014": "val"}
    train = read_split(generated, "train2014")["images"]
    assert len(train) == N_TRAIN
    assert all(len(img["captions"]) == cocolike.CAPTIONS_PER_PICTURE for img in train)
    assert all((generated / img["file"]).is_file() for img in train)
    assert len(list((generated / "val2014").glob("COCO_val2014_*.jpg"))) == N_VAL
    kept = captions_stage(acquire_dir(generated), PRIORS_DIR / "color_words.txt", tmp_path / "c")
    assert kept["counts"]["train"]["captions_seen"] == N_TRAIN * cocolike.CAPTIONS_PER_PICTURE


def test_byte_identical_for_a_seed_and_different_for_another(generated, tmp_path):
    cocolike.generate(tmp_path / "same", n_train=N_TRAIN, n_val=N_VAL, seed=3)
    assert _files(tmp_path / "same") == _files(generated)
    cocolike.generate(tmp_path / "other", n_train=1, n_val=0, seed=4)
    name = "train2014/" + cocolike.file_name("train2014", cocolike.image_id("train2014", 0))
    assert (tmp_path / "other" / name).read_bytes() != (generated / name).read_bytes()


def test_first_pictures_do_not_depend_on_size_and_annotations_not_on_pictures(generated, tmp_path):
    cocolike.generate(tmp_path / "small", n_train=2, n_val=0, seed=3)
    for name, data in _files(tmp_path / "small").items():
        if name.endswith(".jpg"):
            assert data == (generated / name).read_bytes()
    cocolike.generate(tmp_path / "ann", n_train=N_TRAIN, n_val=N_VAL, seed=3, pictures=False)
    assert not list((tmp_path / "ann").rglob("*.jpg"))
    for split in cocolike.SPLITS:
        ann = f"annotations/captions_{split}.json"
        assert (tmp_path / "ann" / ann).read_bytes() == (generated / ann).read_bytes()


def test_pictures_have_coco_sizes_and_photographic_content(generated):
    doc = json.loads((generated / "annotations" / "captions_train2014.json").read_text())
    for entry in doc["images"]:
        with Image.open(generated / "train2014" / entry["file_name"]) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == (entry["width"], entry["height"])
            assert im.size in cocolike.PICTURE_SIZES
            rgb = np.asarray(im)
        assert rgb.std() > 20  # not flat
        packed = rgb.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1])  # (H, W) one int a colour
        assert len(np.unique(packed)) > 5000  # gradients, texture, noise
        assert np.abs(np.diff(rgb.astype(np.int16), axis=1)).mean() > 1.5  # detail at pixel scale


def test_caption_statistics_match_coco():
    lexicon = load_lexicon(PRIORS_DIR / "color_words.txt")
    captions = [
        text
        for i in range(400)
        for text in cocolike.make_captions(cocolike.picture_rng(0, "train2014", i, 0))
    ]  # 2,000 captions
    lengths = np.array([len(tokenize(t)) for t in captions])
    assert lengths.min() >= 8 and lengths.max() <= 20
    assert 10.0 < lengths.mean() < 10.8  # COCO: 10.4
    share = np.mean([bool(colour_words(t, lexicon)) for t in captions])
    assert 0.15 < share < 0.21  # COCO: 0.179; binomial sd here 0.009
    distinct = {w for t in captions[:1000] for w in tokenize(t)}
    assert 1200 < len(distinct) < 2100  # 1,000 real COCO captions hold 1,585 distinct words
    assert len(cocolike.word_list()) == cocolike.VOCAB_SIZE
    assert not set(cocolike.word_list()) & lexicon


def test_the_other_formats_hold_the_same_pictures_and_captions(generated, tmp_path):
    import shutil

    from colorfeat.sources import acquire
    from tests.colorfeat.test_source_table import _pictures

    root = tmp_path / "root"
    shutil.copytree(generated, root)
    coco = _pictures(root)
    one = {(picture, (cocolike.shard_caption(list(captions)),)) for picture, captions in coco}
    for fmt in ("webdataset", "karpathy", "table"):
        source = cocolike.write_format(root, fmt, shard_size=4)
        held = _pictures(Path(acquire(str(source), tmp_path / "work")["root"]))
        assert held == (one if fmt == "webdataset" else coco), fmt
    assert sorted(p.name for p in (root / "shards").iterdir()) == [
        "00000.tar",
        "00000_stats.json",
        "00001.tar",
        "00001_stats.json",
    ]
