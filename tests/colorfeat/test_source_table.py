"""Caption tables as a source: CSV, TSV, JSON Lines and Parquet, pictures by path or as bytes."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colorfeat.errors import UserError
from colorfeat.sources import SourceOptions, acquire, acquired, check, estimate, kind_of
from colorfeat.sources.layout import hashed_split
from tests.colorfeat.test_source_karpathy import _entry, write_karpathy


def _pictures(root: Path) -> set[tuple[str, tuple[str, ...]]]:
    """(SHA-256 of the picture, its captions) of every picture of an acquired source."""
    out = set()
    for path in (root / "annotations").glob("captions_*.json"):
        doc = json.loads(path.read_text())
        split = path.stem.removeprefix("captions_")
        for image in doc["images"]:
            data = (root / split / image["file_name"]).read_bytes()
            texts = tuple(a["caption"] for a in doc["annotations"] if a["image_id"] == image["id"])
            out.add((hashlib.sha256(data).hexdigest(), texts))
    return out


@pytest.fixture
def folder(tmp_path, kit) -> Path:
    """Three pictures in a folder, and one outside it."""
    root = tmp_path / "pictures"
    (root / "img").mkdir(parents=True)
    for i, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        (root / "img" / name).write_bytes(kit.jpeg_bytes(kit.colour_picture(i)))
    (tmp_path / "outside.jpg").write_bytes(kit.jpeg_bytes(kit.colour_picture(7)))
    return root


ROWS = [
    ("img/a.jpg", "a red thing", "train"),
    ("img/a.jpg", "a plain thing", "train"),
    ("img/b.jpg", "a blue thing", "val"),
    ("img/c.jpg", "a green thing", "test"),
    ("../outside.jpg", "a red thing", "train"),  # outside the table's folder
    ("img/gone.jpg", "a red thing", "train"),  # no such picture
    ("img/a.jpg", "a red thing", "holdout"),  # no such split
    ("img/b.jpg", "", "val"),  # an empty caption cell is kept for the captions stage to count
]


def test_a_csv_table_with_paths_and_splits(folder, tmp_path):
    table = folder / "captions.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "caption", "split"])
        writer.writerows(ROWS)
    with open(table, "ab") as f:
        f.write(b"img/c.jpg,a \xff red thing,test\n")  # not UTF-8
    assert kind_of(str(table)).name == "table"
    check(str(table))
    assert acquired(str(table), tmp_path / "work") is None
    src = acquire(str(table), tmp_path / "work")
    assert src["splits"] == {"test": "test", "train": "train", "val": "val"}
    assert src["counts"]["pictures"] == {"test": 1, "train": 1, "val": 1}
    assert src["counts"]["skipped"] == {
        "bad row (not UTF-8, not JSON)": 1, "missing picture": 1, "outside source": 1,
        "unknown split": 1,
    }  # fmt: skip
    assert acquired(str(table), tmp_path / "work") == src
    assert estimate(str(table), src).pictures == 3
    captions = {texts for _, texts in _pictures(Path(src["root"]))}
    assert captions == {("a red thing", "a plain thing"), ("a blue thing", ""), ("a green thing",)}


def test_tsv_and_jsonl_tables_read_the_same(folder, tmp_path):
    tsv = folder / "captions.tsv"
    tsv.write_text("image\ttext\tsplit\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in ROWS))
    jsonl = folder / "captions.jsonl"
    rows = [{"image": a, "caption": b, "split": c} for a, b, c in ROWS]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    a = acquire(str(tsv), tmp_path / "work")
    b = acquire(str(jsonl), tmp_path / "work")
    assert _pictures(Path(a["root"])) == _pictures(Path(b["root"]))
    assert b["counts"]["skipped"]["bad row (not UTF-8, not JSON)"] == 1  # the line that is not JSON


def test_a_parquet_table_holding_the_pictures_and_lists_of_captions(folder, tmp_path):
    names = ["a.jpg", "b.jpg", "c.jpg"]
    images = [{"bytes": (folder / "img" / n).read_bytes(), "path": n} for n in names]
    captions = [["a red thing", "a plain thing"], ["a blue thing"], ["a green thing"]]
    table = tmp_path / "hf" / "train-00000.parquet"
    table.parent.mkdir()
    pq.write_table(pa.table({"image": images, "sentences": captions}), table)
    src = acquire(str(table), tmp_path / "work")
    assert sum(src["counts"]["pictures"].values()) == 3  # split by a hash of each name
    assert set(src["splits"]) <= {"train", "val"}
    texts = sorted(t for _, t in _pictures(Path(src["root"])))
    assert texts == [("a blue thing",), ("a green thing",), ("a red thing", "a plain thing")]


def test_a_table_and_a_karpathy_file_of_the_same_data_give_the_same_pictures(folder, tmp_path, kit):
    entries = [_entry(i, s, n) for i, (n, s) in enumerate((("a.jpg", "train"), ("b.jpg", "val")))]
    karpathy = write_karpathy(folder / "img", kit, entries, [])
    table = folder / "captions.csv"
    table.write_text(
        "file_name,caption,split\n"
        + "".join(f"img/{e['filename']},{s['raw']},{e['split']}\n"
                  for e in entries for s in e["sentences"])
    )  # fmt: skip
    from_table = _pictures(Path(acquire(str(table), tmp_path / "w1")["root"]))
    from_karpathy = _pictures(Path(acquire(str(karpathy), tmp_path / "w2")["root"]))
    assert from_table == from_karpathy and len(from_table) == 2


def test_bad_tables_are_one_line(folder, tmp_path):
    table = folder / "captions.csv"
    table.write_text("file_name,words\nimg/a.jpg,a red thing\n")
    with pytest.raises(UserError, match="no caption column among file_name, words"):
        acquire(str(table), tmp_path / "work")
    table.write_text("file_name,caption\nimg/gone.jpg,a red thing\n")
    with pytest.raises(UserError, match="gave no picture with a caption"):
        acquire(str(table), tmp_path / "work")
    table.write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="caption table .*bad.parquet cannot be read"):
        acquire(str(table.rename(folder / "bad.parquet")), tmp_path / "work")
    with pytest.raises(UserError, match="caption table not found"):
        check(str(folder / "missing.parquet"))
    (folder / "link.csv").symlink_to(tmp_path / "elsewhere.csv")
    (tmp_path / "elsewhere.csv").write_text("file_name,caption\n")
    with pytest.raises(UserError, match="link to outside the source"):
        check(str(folder / "link.csv"))


def test_the_identity_follows_the_table_and_its_pictures(folder, tmp_path):
    import os

    table = folder / "captions.csv"
    table.write_text("file_name,caption\nimg/a.jpg,a red thing\nimg/b.jpg,a blue thing\n")
    first = acquire(str(table), tmp_path / "work")["identity"]
    assert acquire(str(table), tmp_path / "work")["identity"] == first
    picture = folder / "img" / "b.jpg"
    os.utime(picture, ns=(1, picture.stat().st_mtime_ns + 1))
    second = acquire(str(table), tmp_path / "work")["identity"]
    table.write_text("file_name,caption\nimg/a.jpg,a green thing\nimg/b.jpg,a blue thing\n")
    os.utime(table, ns=(1, table.stat().st_mtime_ns + 1))
    third = acquire(str(table), tmp_path / "work")
    assert len({first, second, third["identity"]}) == 3
    assert ("a green thing",) in {t for _, t in _pictures(Path(third["root"]))}


def test_a_parquet_table_with_odd_column_names_is_read_through_the_column_options(folder, tmp_path):
    names = ["a.jpg", "b.jpg", "c.jpg"]
    table = folder / "odd.parquet"
    pq.write_table(
        pa.table({
            "Picture": [f"img/{n}" for n in names],
            "Sentence": ["a red thing", "a blue thing", "a green thing"],
            "Other Sentence": ["a pink thing", "a grey thing", "a black thing"],
            "Part": ["train", "val", "test"],
        }),
        table,
    )  # fmt: skip
    with pytest.raises(UserError) as err:
        acquire(str(table), tmp_path / "work")
    assert str(err.value) == (
        f"{table}: no image column among Picture, Sentence, Other Sentence, Part (looked for "
        "image, image_path, file_name, filename, filepath, file, path, img; name it with "
        "--image-column)"
    )
    options = SourceOptions(image_column="Picture", caption_column="Sentence", split_column="Part")
    check(str(table), options)
    assert estimate(str(table), None, options=options).pictures == 3  # before it is read
    src = acquire(str(table), tmp_path / "work", options=options)
    assert src["counts"]["pictures"] == {"test": 1, "train": 1, "val": 1}
    assert acquired(str(table), tmp_path / "work", options=options) == src
    assert estimate(str(table), src, options=options).pictures == 3
    texts = {t for _, t in _pictures(Path(src["root"]))}
    assert texts == {("a red thing",), ("a blue thing",), ("a green thing",)}

    # Another caption column is another source: never the copy read with the first one.
    other = SourceOptions(image_column="Picture", caption_column="Other Sentence",
                          split_column="Part")  # fmt: skip
    assert acquired(str(table), tmp_path / "work", options=other) is None
    again = acquire(str(table), tmp_path / "work", options=other)
    assert again["identity"] != src["identity"] and again["root"] != src["root"]
    assert {t for _, t in _pictures(Path(again["root"]))} == {
        ("a pink thing",),
        ("a grey thing",),
        ("a black thing",),
    }


def test_a_column_option_naming_no_column_is_one_line_with_the_columns_present(folder, tmp_path):
    table = folder / "captions.csv"
    table.write_text("file_name,caption\nimg/a.jpg,a red thing\n")
    for flag, options in (
        ("--caption-column", SourceOptions(caption_column="text")),
        ("--split-column", SourceOptions(split_column="fold")),
    ):
        with pytest.raises(UserError) as err:
            acquire(str(table), tmp_path / "work", options=options)
        name = options.caption_column or options.split_column
        assert str(err.value) == f"{table}: no column {name!r} ({flag}) among file_name, caption"
        assert "\n" not in str(err.value)


def test_a_csv_with_an_image_root_reads_its_pictures_there(folder, tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    table = tables / "captions.csv"
    table.write_text(
        "file_name,caption,split\n"
        "a.jpg,a red thing,train\nb.jpg,a blue thing,val\n"
        "../../outside.jpg,a red thing,train\n"  # outside the picture root
    )
    with pytest.raises(UserError, match="gave no picture with a caption"):
        acquire(str(table), tmp_path / "work")  # the pictures are not beside the table
    options = SourceOptions(image_root=str(folder / "img"))
    src = acquire(str(table), tmp_path / "work", options=options)
    assert src["counts"]["pictures"] == {"train": 1, "val": 1}
    assert src["counts"]["skipped"] == {"outside source": 1}
    pictures = _pictures(Path(src["root"]))
    assert {t for _, t in pictures} == {("a red thing",), ("a blue thing",)}
    digest = hashlib.sha256((folder / "img" / "a.jpg").read_bytes()).hexdigest()
    assert (digest, ("a red thing",)) in pictures
    with pytest.raises(UserError, match=f"^--image-root {tmp_path / 'nowhere'} is not a direc"):
        acquire(
            str(table),
            tmp_path / "work",
            options=SourceOptions(image_root=str(tmp_path / "nowhere")),
        )


def test_the_val_fraction_splits_a_table_without_a_split_column(folder, tmp_path):
    table = folder / "captions.csv"
    names = [f"img/{n}.jpg" for n in "abc"]
    table.write_text("file_name,caption\n" + "".join(f"{n},a red thing\n" for n in names))
    default = acquire(str(table), tmp_path / "work")
    expected = {s: sum(hashed_split(n) == s for n in names) for s in ("train", "val")}
    assert default["counts"]["pictures"] == {s: n for s, n in expected.items() if n}
    assert (
        default["identity"]
        == acquire(str(table), tmp_path / "work", options=SourceOptions(val_fraction=0.2))[
            "identity"
        ]
    )  # the default, given: the same source
    none_held = acquire(str(table), tmp_path / "work", options=SourceOptions(val_fraction=0))
    assert none_held["counts"]["pictures"] == {"train": 3}
    assert none_held["identity"] != default["identity"]


def test_the_default_val_fraction_is_the_one_in_five_rule_pictures_were_always_split_by():
    names = [f"{i:06d}.jpg" for i in range(2000)]
    for name in names:
        digest = hashlib.sha256(name.encode()).digest()
        old = "val" if int.from_bytes(digest[:8], "big") % 5 == 0 else "train"
        assert hashed_split(name) == old == hashed_split(name, 0.2)
    held = sum(hashed_split(n, 0.5) == "val" for n in names)
    assert 900 < held < 1100 and not any(hashed_split(n, 0) == "val" for n in names)
