"""What a rebuild says about its pictures: kept, and skipped by reason, wherever it is reported."""

from __future__ import annotations

from flows.report import summary_markdown
from flows.summary import pictures_line, skip_reasons

IMAGES = {
    "train": {"candidates": 30, "images": 24, "skipped": {"grayscale": 5, "corrupt": 1}},
    "val": {"candidates": 6, "images": 5, "skipped": {"grayscale": 1}},
    "test": {"candidates": 2, "images": 2, "skipped": {}},
}


def test_every_skip_reason_is_counted_over_the_splits_most_frequent_first():
    assert skip_reasons(IMAGES) == {"grayscale": 6, "corrupt": 1}
    assert list(skip_reasons({"val": {"skipped": {"b": 1, "a": 1, "c": 2}}})) == ["c", "a", "b"]
    assert skip_reasons({"train": {"candidates": 1, "images": 1}}) == {}


def test_the_pictures_line_gives_kept_of_candidates_and_each_reason():
    assert pictures_line(IMAGES) == (
        "kept 31 of 38 pictures with a colour caption; skipped 7: grayscale 6, corrupt 1"
    )
    none = {"train": {"candidates": 3, "images": 3, "skipped": {}}}
    assert pictures_line(none) == "kept 3 of 3 pictures with a colour caption; skipped none"


def test_the_artifact_gives_each_reason_with_its_count_before_the_files():
    summary = {
        "version": "v1", "path": "/s/versions/v1", "published": True,
        "source": {"spec": "photos", "identity": "dir-1"},
        "counts": {"captions": {}, "images": IMAGES}, "stages": {},
    }  # fmt: skip
    skipped = [{"file": "train/a.jpg", "reason": "grayscale"}]
    text = summary_markdown(summary, skipped)
    assert "By reason: grayscale 6, corrupt 1." in text
    assert text.index("By reason:") < text.index("| `train/a.jpg` | grayscale |")
