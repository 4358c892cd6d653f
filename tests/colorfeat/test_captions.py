"""Tokenization, colour-caption filtering and the captions stage, on real and tiny COCO captions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from colorfeat.constants import PRIORS_DIR
from colorfeat.errors import UserError
from colorfeat.stages.captions import (
    captions_stage,
    colour_words,
    load_captions,
    load_lexicon,
    select,
    tokenize,
)

LEXICON_FILE = PRIORS_DIR / "color_words.txt"


@pytest.fixture(scope="module")
def lexicon() -> frozenset[str]:
    return load_lexicon(LEXICON_FILE)


@pytest.fixture(scope="module")
def real(reference_dir) -> list[dict]:
    return json.loads((reference_dir / "coco_val2014_captions_sample.json").read_text())


def test_tokenize():
    assert tokenize("  A Red-haired MAN's bike,\n on 'grass'. ") == [
        "a",
        "red",
        "haired",
        "man's",
        "bike",
        "on",
        "grass",
    ]
    assert tokenize('Sign reads "FRIZERIE" in front of a red building.')[2] == "frizerie"
    assert tokenize("") == []


def test_lexicon_file(lexicon, tmp_path):
    assert {"red", "grey", "gray", "orange", "blonde"} <= lexicon
    assert not any(w.startswith("#") or " " in w for w in lexicon)
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(UserError, match="has no words"):
        load_lexicon(tmp_path / "empty.txt")
    with pytest.raises(UserError, match="cannot read the colour lexicon"):
        load_lexicon(tmp_path / "missing.txt")


def test_word_boundaries_and_plurals(lexicon):
    assert colour_words("a redwood forest with tall trees", lexicon) == []
    assert colour_words("The Redwood and the RED car", lexicon) == ["red"]
    assert colour_words("a bowl of oranges and greens", lexicon) == []  # plurals are things
    assert colour_words("a pitcher next to orange slices", lexicon) == ["orange"]
    assert colour_words("a grey and white cat", lexicon) == ["grey", "white"]
    assert colour_words("blue-green water", lexicon) == ["blue", "green"]


def test_real_captions(real, lexicon):
    by_text = {r["caption"]: colour_words(r["caption"], lexicon) for r in real}
    grey = [t for t in by_text if "grey" in t.lower()]
    assert grey and all("grey" in by_text[t] for t in grey)
    oranges = [t for t in by_text if "oranges" in t.lower()]
    assert len(oranges) == 3
    assert "Painting of oranges, a bowl, candle, and a pitcher" in oranges
    assert by_text["Painting of oranges, a bowl, candle, and a pitcher"] == []
    slices = "A large pitcher of some beverage is on the table next to orange slices."
    assert by_text[slices] == ["orange"]
    assert by_text["A golden retriever sleeps at the edge of the pool."] == ["golden"]
    # "covered", "colored", "bored": substrings are not words
    assert by_text["A herd of sheep standing on top of snow covered field."] == []
    assert sum(1 for w in by_text.values() if w) == 179


def test_select_keeps_every_colour_caption_and_drops_bare_images(real, lexicon):
    images = [
        {"image_id": 1, "file": "v/1.jpg", "captions": ["a red bus", "a bus", " A\nBLUE sky \n"]},
        {"image_id": 2, "file": "v/2.jpg", "captions": ["a redwood", "a dog"]},
        {"image_id": 3, "file": "v/3.jpg", "captions": ["", "   ", "white snow"]},
    ]
    kept, counts = select(images, lexicon)
    assert [k["image_id"] for k in kept] == [1, 3]
    assert kept[0]["captions"] == ["a red bus", "A BLUE sky"]
    assert counts == {
        "images_seen": 3,
        "images_kept": 2,
        "captions_seen": 8,
        "captions_kept": 3,
        "captions_empty": 2,
        "colour_words": {"blue": 1, "red": 1, "white": 1},
    }
    real_images = [
        {"image_id": r["image_id"], "file": "x", "captions": [r["caption"]]} for r in real
    ]
    kept, counts = select(real_images, lexicon)
    assert counts["images_kept"] == 179 and counts["colour_words"]["white"] > 10


def _source(root: Path, splits: dict[str, str]) -> dict:
    return {"root": str(root), "splits": splits, "identity": "test"}


def test_captions_stage(tmp_path, kit):
    root = tmp_path / "coco"
    kit.write_coco(
        root,
        "train2014",
        {},
        {"a.jpg": ["a red car", "a car"], "b.jpg": ["a dog"], "c.jpg": ["green grass"]},
    )
    kit.write_coco(root, "val2014", {}, {"d.jpg": ["a white plate", "white and blue"]})
    src = _source(root, {"train2014": "train", "val2014": "val"})
    out = tmp_path / "stage"
    res = captions_stage(src, LEXICON_FILE, out)
    assert (out / "_SUCCESS").is_file() and not out.with_name("stage.partial").exists()
    doc = load_captions(res)
    assert [i["file"] for i in doc["splits"]["train"]] == ["train2014/a.jpg", "train2014/c.jpg"]
    assert doc["splits"]["val"][0]["captions"] == ["a white plate", "white and blue"]
    assert res["counts"]["train"]["images_seen"] == 3
    assert res["counts"]["images_kept"] == 3
    assert res["counts"]["colour_words"] == {"blue": 1, "green": 1, "red": 1, "white": 2}
    # idempotent: a finished stage returns its result without reading the source again
    (root / "annotations" / "captions_train2014.json").unlink()
    assert captions_stage(src, LEXICON_FILE, out) == res
    limited = captions_stage(
        _source(root, {"val2014": "val"}), LEXICON_FILE, tmp_path / "lim", limit=1
    )
    assert limited["counts"]["val"]["images_seen"] == 1


def test_orphan_captions_are_counted(tmp_path, kit):
    root = tmp_path / "coco"
    kit.write_coco(root, "val2014", {}, {"a.jpg": ["a red car"]})
    path = root / "annotations" / "captions_val2014.json"
    doc = json.loads(path.read_text())
    doc["annotations"].append({"id": 99, "image_id": 12345, "caption": "a blue car"})
    path.write_text(json.dumps(doc))
    res = captions_stage(_source(root, {"val2014": "val"}), LEXICON_FILE, tmp_path / "s")
    assert res["counts"]["val"]["captions_orphan"] == 1
    assert res["counts"]["val"]["captions_kept"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "annotations file is empty"),
        ("  \n", "annotations file is empty"),
        ('{"images": [', "not valid JSON"),
        ("[1, 2]", "not a COCO captions file"),
        ('{"images": [], "annotations": [{"caption": "x"}]}', "caption entry 0"),
        ('{"images": [{"file_name": "a.jpg"}], "annotations": []}', "image entry 0"),
    ],
)
def test_bad_annotation_files_name_the_file(tmp_path, content, message):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    path = root / "annotations" / "captions_val2014.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        captions_stage(_source(root, {"val2014": "val"}), LEXICON_FILE, tmp_path / "s")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_annotations_file(tmp_path):
    with pytest.raises(UserError, match="annotations file not found: .*captions_val2014.json"):
        captions_stage(_source(tmp_path, {"val2014": "val"}), LEXICON_FILE, tmp_path / "s")


def test_no_colour_caption_at_all(tmp_path, kit):
    kit.write_coco(tmp_path / "c", "val2014", {}, {"a.jpg": ["a dog"]})
    with pytest.raises(UserError, match="no caption .* names a colour"):
        captions_stage(_source(tmp_path / "c", {"val2014": "val"}), LEXICON_FILE, tmp_path / "s")


def test_pycocotools_prints_nothing_on_stdout(tmp_path, kit, capfd):
    kit.write_coco(tmp_path / "c", "val2014", {}, {"a.jpg": ["a red dog"]})
    captions_stage(_source(tmp_path / "c", {"val2014": "val"}), LEXICON_FILE, tmp_path / "s")
    assert capfd.readouterr().out == ""


def _doc(images: list, annotations: list) -> str:
    return json.dumps({"images": images, "annotations": annotations})


_A, _B = {"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}
_RED = {"id": 1, "image_id": 1, "caption": "a red car"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_doc([_A, {**_B, "id": 1}], [_RED]), "image entries 0 and 1 share the id 1"),
        (_doc([_A, {**_B, "id": True}], [_RED]), "image entry 1 has id True, not an integer"),
        (_doc([{**_A, "id": 2**64}], [_RED]), "image entry 0 has id 1844"),
        (_doc([{**_A, "id": -1}], [_RED]), "image entry 0 has id -1"),
        (_doc([{**_A, "id": 1.0}], [_RED]), "image entry 0 has id 1.0"),
        (_doc([{**_A, "file_name": ["a.jpg"]}], [_RED]), "image entry 0 lacks"),
        (_doc([_A], [{**_RED, "image_id": True}]), "caption entry 0 has image_id True"),
        (_doc([_A], [{**_RED, "image_id": 2**63}]), "caption entry 0 has image_id 9223"),
        (_doc([_A], [{**_RED, "id": "x"}]), "caption entry 0 has id 'x'"),
        ('{"images": [{"id": ' + "9" * 5000 + "}]}", "holds an unreadable number"),
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ],
)
def test_caption_ids_are_checked_when_the_file_is_read(tmp_path, content, message):
    """An id that is not an int64 from 0 on, or one picture's id given to another, would pair
    captions with the wrong pictures: the file is refused in one line naming it."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    path = root / "annotations" / "captions_val2014.json"
    path.write_text(content)
    out = tmp_path / "s"
    with pytest.raises(UserError, match=message) as err:
        captions_stage(_source(root, {"val2014": "val"}), LEXICON_FILE, out)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert len(str(err.value)) < 400
    assert not out.exists() and not out.with_name("s.partial").exists()


def test_ids_in_range_and_unique_pair_as_written(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    big = 2**63 - 1
    images = [{"id": big, "file_name": "big.jpg"}, {"id": 0, "file_name": "zero.jpg"}]
    anns = [
        {"image_id": 0, "caption": "a green cup"},
        {"id": 7, "image_id": big, "caption": "a blue car"},
        {"id": 3, "image_id": big, "caption": "a red car"},
    ]
    (root / "annotations" / "captions_val2014.json").write_text(_doc(images, anns))
    res = captions_stage(_source(root, {"val2014": "val"}), LEXICON_FILE, tmp_path / "s")
    doc = load_captions(res)["splits"]["val"]
    assert [(i["image_id"], i["file"], i["captions"]) for i in doc] == [
        (0, "val2014/zero.jpg", ["a green cup"]),
        (big, "val2014/big.jpg", ["a red car", "a blue car"]),
    ]
