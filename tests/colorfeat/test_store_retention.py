"""Retention: pin/unpin and gc by count, age and the readers' grace period; never LATEST nor a
pinned version; dry runs; stage outputs of the work dir; a gc killed midway."""

from __future__ import annotations

import fcntl
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from colorfeat.errors import UserError
from colorfeat.store import (
    LATEST,
    gc,
    list_versions,
    open_store,
    pin,
    pinned,
    render_versions,
    retention,
    unpin,
)

sys.path.insert(0, str(Path(__file__).parent))
from conftest_store import make_stage_parts, publish_parts  # noqa: E402

LATER = datetime.now(UTC) + timedelta(days=2)


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict:
    return make_stage_parts(tmp_path_factory.mktemp("work"))


def _publish(root: Path, parts: dict, tags: str) -> list[str]:
    """One version per tag, each LATEST in turn; their ids, oldest first."""
    return [
        publish_parts(root, {**parts, "keys": {**parts["keys"], "tag": t}})["version"] for t in tags
    ]


def _left(root: Path) -> list[str]:
    return sorted(d["version"] for d in list_versions(str(root)))


def test_gc_keeps_latest_pinned_new_and_recent_versions_only(parts, tmp_path) -> None:
    root = tmp_path / "root"
    a, b, c, d = _publish(root, parts, "abcd")
    pin(str(root), b)
    assert pinned(str(root)) == {b}
    assert f"p {b}" in render_versions(list_versions(str(root)))  # `store ls` shows the pin
    dry = gc(str(root), dry_run=True, now=LATER)
    assert sorted(r["version"] for r in dry.removed) == sorted([a, c])
    assert dry.kept == {d: "LATEST", b: "pinned"} and dry.freed_bytes > 0
    assert _left(root) == sorted([a, b, c, d])  # a dry run removes nothing
    assert any(line.startswith(f"would remove version {a}") for line in dry.lines())

    assert gc(str(root), keep_days=5, now=LATER).removed == []  # two days old: kept
    assert gc(str(root), keep_last=4, now=LATER).removed == []
    done = gc(str(root), now=LATER)
    assert sorted(r["version"] for r in done.removed) == sorted([a, c])
    assert _left(root) == sorted([b, d])
    for vid in (b, d):
        open_store(root / "versions" / vid).validate()
    assert unpin(str(root), b) and not unpin(str(root), b)
    assert [r["version"] for r in gc(str(root), now=LATER).removed] == [b]
    assert (root / LATEST).read_text().strip() == d and _left(root) == [d]


def test_a_reader_of_a_version_that_just_stopped_being_latest_keeps_it(parts, tmp_path) -> None:
    root = tmp_path / "root"
    (a,) = _publish(root, parts, "a")
    reading = open_store(root)  # a reader follows LATEST to a
    (b,) = _publish(root, parts, "b")  # a stops being LATEST now
    found = gc(str(root), keep_last=1)  # as a schedule applies it right after the rebuild
    assert found.removed == [] and found.kept[a].startswith("within the readers' grace period")
    assert reading.features is not None and reading.array("train", "rgb")[:].shape[0] == 12
    assert [r["version"] for r in gc(str(root), keep_last=1, grace_s=0).removed] == [a]


def test_a_gc_killed_midway_leaves_only_valid_versions(parts, tmp_path, monkeypatch) -> None:
    root = tmp_path / "root"
    a, b, c = _publish(root, parts, "abc")

    def killed(path, *args, **kw):  # the process dies after the first rename
        raise KeyboardInterrupt

    monkeypatch.setattr(retention.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        gc(str(root), now=LATER)
    monkeypatch.undo()
    assert len(_left(root)) == 2 and c in _left(root)
    for vid in _left(root):
        open_store(root / "versions" / vid).validate()
    gc(str(root), now=LATER)
    assert _left(root) == [c] and not list((root / "versions").glob(".tmp-gc-*"))


def test_gc_removes_stage_outputs_no_kept_version_needs_unless_a_build_runs(parts, tmp_path):
    root, work = tmp_path / "root", tmp_path / "work"
    _publish(root, parts, "a")
    for key in ["old-0123", *parts["keys"].values()]:
        (work / "stages" / key).mkdir(parents=True)
        (work / "stages" / key / "_SUCCESS").write_text("{}")
    (work / "stages" / "old-0123" / "data").write_bytes(b"x" * 1000)
    with open(work / ".lock", "a") as lock:  # a build holds the work dir
        fcntl.flock(lock, fcntl.LOCK_EX)
        busy = gc(str(root), work_dir=work, now=LATER)
    assert busy.stage_outputs == [] and "a build holds" in busy.note
    assert (work / "stages" / "old-0123").is_dir()
    dry = gc(str(root), work_dir=work, now=LATER, dry_run=True)
    assert [Path(s["path"]).name for s in dry.stage_outputs] == ["old-0123"]
    assert dry.freed_bytes >= 1000 and (work / "stages" / "old-0123").is_dir()
    gc(str(root), work_dir=work, now=LATER)
    assert sorted(p.name for p in (work / "stages").iterdir()) == sorted(parts["keys"].values())


def test_pins_name_published_versions_only(parts, tmp_path) -> None:
    root = tmp_path / "root"
    _publish(root, parts, "a")
    for bad in ("0123456789abcdef", "../../etc"):
        with pytest.raises(UserError, match="has no published version"):
            pin(str(root), bad)
    with pytest.raises(UserError, match="must not be negative"):
        gc(str(root), keep_last=-1)
