"""A source's annotation files follow the picture rules: regular files inside the root, bounded."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from colorfeat.constants import PRIORS_DIR
from colorfeat.errors import UserError
from colorfeat.sources import acquire, check
from colorfeat.sources.files import MAX_ANNOTATION_BYTES, read_bounded
from colorfeat.stages.captions import captions_stage

LEXICON = PRIORS_DIR / "color_words.txt"
CAPTIONS = Path("annotations") / "captions_val2014.json"


@pytest.fixture
def coco(tmp_path, kit) -> Path:
    """A COCO-layout source of one picture, its captions file to be replaced by each test."""
    root = tmp_path / "coco"
    kit.write_coco(root, "val2014", {"a.jpg": kit.jpeg_bytes(kit.colour_picture(0))}, {})
    return root


def _one_line_within(seconds: float, call: Callable[[], object]) -> str:
    """The UserError `call` raises; a call still waiting after `seconds` fails the test (a
    reader blocked on a FIFO never returns, so it runs in a daemon thread)."""
    caught: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 (handed to the test's thread)
            caught.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "still waiting: the file was opened as if it were regular"
    assert caught and isinstance(caught[0], UserError), caught
    message = str(caught[0])
    assert "\n" not in message
    return message


def _every_reader(root: Path, work: Path) -> list[Callable[[], object]]:
    """Each place a source's captions file is opened: the check before a run, the acquire
    stage (its identity hashes the file) and the captions stage."""
    source = {"root": str(root), "splits": {"val2014": "val"}, "identity": "test"}
    return [
        lambda: check(str(root)),
        lambda: acquire(str(root), work),
        lambda: captions_stage(source, LEXICON, work / "captions"),
    ]


def test_a_fifo_in_place_of_the_captions_file_is_refused_at_once(coco, tmp_path):
    (coco / CAPTIONS).unlink()
    os.mkfifo(coco / CAPTIONS)
    for call in _every_reader(coco, tmp_path / "work"):
        message = _one_line_within(10, call)
        assert f"{coco / CAPTIONS} is not a regular file" in message


def test_a_captions_file_linking_out_of_the_source_is_refused(coco, tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes((coco / CAPTIONS).read_bytes())
    (coco / CAPTIONS).unlink()
    (coco / CAPTIONS).symlink_to(outside)
    for call in _every_reader(coco, tmp_path / "work"):
        message = _one_line_within(10, call)
        assert f"{coco / CAPTIONS} is a link to outside the source" in message


def test_a_link_inside_the_source_is_followed(coco, tmp_path):
    kept = coco / "annotations" / "kept.json"
    (coco / CAPTIONS).rename(kept)
    (coco / CAPTIONS).symlink_to(kept)
    check(str(coco))
    assert acquire(str(coco), tmp_path / "work")["splits"] == {"val2014": "val"}


def test_an_oversized_captions_file_is_refused_before_it_is_read(coco, tmp_path):
    with open(coco / CAPTIONS, "r+b") as file:  # sparse: no disk, no memory
        file.truncate(MAX_ANNOTATION_BYTES + 1)
    for call in _every_reader(coco, tmp_path / "work"):
        message = _one_line_within(10, call)
        assert f"{coco / CAPTIONS} holds 512.0 MiB, over the limit of 512.0 MiB" in message


def test_a_directory_named_like_a_captions_file_is_refused(coco, tmp_path):
    (coco / CAPTIONS).unlink()
    (coco / CAPTIONS).mkdir()
    message = _one_line_within(10, lambda: check(str(coco)))
    assert "is not a regular file" in message


def test_read_bounded_takes_a_regular_file_up_to_the_limit(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"x" * 10)
    assert read_bounded(tmp_path, path, what="file", limit=10) == b"x" * 10
    with pytest.raises(UserError, match="holds 11 B, over the limit of 10 B"):
        path.write_bytes(b"x" * 11)
        read_bounded(tmp_path, path, what="file", limit=10)
    with pytest.raises(UserError, match="file not found"):
        read_bounded(tmp_path, tmp_path / "missing.json", what="file")
