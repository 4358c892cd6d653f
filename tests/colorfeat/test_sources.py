"""acquire(): synthetic, COCO-layout directories and HTTP mirrors, each to a COCO-layout root."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from colorfeat.constants import PRIORS_DIR
from colorfeat.disk import FREE_BYTES_ENV
from colorfeat.errors import UserError
from colorfeat.sources import acquire
from colorfeat.stages.captions import captions_stage

LEXICON = PRIORS_DIR / "color_words.txt"


def _mirror(server, kit, year: str = "2014") -> dict[str, bytes]:
    """Serve a tiny mirror of the official layout; -> {url path: bytes}."""
    archives = {}
    for split, n in ((f"train{year}", 3), (f"val{year}", 2)):
        members = {f"{split}/{i:03d}.jpg": kit.jpeg_bytes(kit.colour_picture(i)) for i in range(n)}
        archives[f"/zips/{split}.zip"] = kit.zip_bytes(members)
    ann = {}
    for split, n in ((f"train{year}", 3), (f"val{year}", 2)):
        doc = {
            "images": [{"id": i + 1, "file_name": f"{i:03d}.jpg"} for i in range(n)],
            "annotations": [
                {"id": i + 1, "image_id": i + 1, "caption": f"a red thing number {i}"}
                for i in range(n)
            ],
        }
        ann[f"annotations/captions_{split}.json"] = json.dumps(doc).encode()
    ann[f"annotations/instances_train{year}.json"] = b"{}"
    archives[f"/annotations/annotations_trainval{year}.zip"] = kit.zip_bytes(ann)
    server.files.update(archives)
    listing = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {path.lstrip('/')}\n"
        for path, data in archives.items()
    )
    server.files["/SHA256SUMS"] = listing.encode()
    return archives


def test_mirror_download_extract_and_reuse(file_server, kit, tmp_path):
    _mirror(file_server, kit)
    file_server.drop_once.add("/zips/train2014.zip")
    src = acquire(file_server.url + "/", tmp_path, checksums={}, progress=False)
    root = Path(src["root"])
    assert src["splits"] == {"train2014": "train", "val2014": "val"}
    names = sorted(p.name for p in (root / "train2014").iterdir())
    assert names == ["000.jpg", "001.jpg", "002.jpg"]
    assert sorted(p.name for p in (root / "annotations").iterdir()) == [
        "captions_train2014.json",
        "captions_val2014.json",
    ]
    assert not list((tmp_path / "downloads").rglob("*.zip*"))  # archives gone once extracted
    n = len(file_server.requests)
    assert acquire(file_server.url, tmp_path, checksums={}, progress=False) == src
    assert len(file_server.requests) == n  # nothing fetched again
    caps = captions_stage(src, LEXICON, tmp_path / "caps", limit=2)  # --limit with a download
    assert caps["counts"]["train"]["images_seen"] == 1
    assert caps["counts"]["val"]["images_seen"] == 1


def test_interrupted_mirror_resumes_without_refetching(file_server, kit, tmp_path):
    archives = _mirror(file_server, kit)
    del file_server.files["/zips/val2014.zip"]
    with pytest.raises(UserError, match="val2014.zip: HTTP 404"):
        acquire(file_server.url, tmp_path, checksums={}, progress=False)
    file_server.files["/zips/val2014.zip"] = archives["/zips/val2014.zip"]
    file_server.requests.clear()
    acquire(file_server.url, tmp_path, checksums={}, progress=False)
    fetched = {path for method, path, _ in file_server.requests if method == "GET"}
    assert "/zips/train2014.zip" not in fetched and "/zips/val2014.zip" in fetched


@pytest.fixture
def any_free_disk(monkeypatch) -> None:
    """The official archives' sizes (13-19 GB) whatever this machine has free: the size check
    under test comes after the disk check, which tests/flows/test_flow_preflight.py covers."""
    monkeypatch.setenv(FREE_BYTES_ENV, str(10**15))


@pytest.mark.usefixtures("any_free_disk")
def test_mirror_file_named_like_an_official_one_is_checked_against_it(file_server, kit, tmp_path):
    _mirror(file_server, kit)
    with pytest.raises(UserError, match="SHA256SUMS disagrees with the official checksum"):
        acquire(file_server.url, tmp_path, progress=False)
    del file_server.files["/SHA256SUMS"]
    with pytest.raises(UserError, match="train2014.zip: expected 13510573713 bytes"):
        acquire(file_server.url, tmp_path, progress=False)
    assert not list((tmp_path / "downloads").rglob("train2014.zip*"))


def test_mirror_sha256sums_is_honoured(file_server, kit, tmp_path):
    _mirror(file_server, kit)
    file_server.files["/SHA256SUMS"] = f"{'0' * 64}  zips/train2014.zip\n".encode()
    with pytest.raises(UserError, match="SHA-256 mismatch"):
        acquire(file_server.url, tmp_path, checksums={}, progress=False)


def test_mirror_with_an_escaping_member_is_refused(file_server, kit, tmp_path):
    _mirror(file_server, kit)
    file_server.files["/zips/train2014.zip"] = kit.zip_bytes({"../../evil.jpg": b"x"})
    file_server.files["/SHA256SUMS"] = b""
    with pytest.raises(UserError, match="refusing .*train2014.zip"):
        acquire(file_server.url, tmp_path, checksums={}, progress=False)
    assert not list(tmp_path.rglob("evil.jpg"))


def test_url_that_is_not_a_mirror(file_server, tmp_path):
    with pytest.raises(UserError, match="is not a COCO mirror"):
        acquire(file_server.url, tmp_path, progress=False)


def test_directory_source(tmp_path, kit):
    root = tmp_path / "coco"
    kit.write_coco(root, "val2017", {"a.jpg": b"x"}, {"a.jpg": ["a red cat"]})
    kit.write_coco(root, "test2017", {"b.jpg": b"x"}, {"b.jpg": ["a red cat"]})
    src = acquire(str(root), tmp_path / "work")
    assert src["root"] == str(root.resolve())
    assert src["splits"] == {"val2017": "val"}  # test splits are not part of the store
    (root / "val2017" / "b.jpg").write_bytes(b"yy")
    assert acquire(str(root), tmp_path / "work")["identity"] != src["identity"]


def _edit_in_place(path: Path, data: bytes) -> None:
    """New bytes of the same size, written a second after the file's last change."""
    before = path.stat()
    assert len(data) == before.st_size and data != path.read_bytes()
    path.write_bytes(data)
    later = before.st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(later, later))


def test_directory_identity_sees_a_picture_edited_in_place(tmp_path, kit):
    root, work = tmp_path / "coco", tmp_path / "work"
    kit.write_coco(root, "val2017", {"a.jpg": b"abc"}, {"a.jpg": ["a red cat"]})
    (root / "val2017" / "sub").mkdir()
    (root / "val2017" / "sub" / "b.jpg").write_bytes(b"xyz")
    first = acquire(str(root), work)["identity"]
    assert acquire(str(root), work)["identity"] == first  # untouched: unchanged
    shutil.copytree(root, tmp_path / "copy")  # copy2 keeps modification times
    assert acquire(str(tmp_path / "copy"), work)["identity"] == first  # where it lies is no part
    _edit_in_place(root / "val2017" / "a.jpg", b"abd")
    second = acquire(str(root), work)["identity"]
    assert second != first
    _edit_in_place(root / "val2017" / "sub" / "b.jpg", b"xyw")  # below the split directory too
    assert acquire(str(root), work)["identity"] not in (first, second)


def test_directory_identity_lists_linked_directories_inside_the_root_once(tmp_path, kit):
    root, work = tmp_path / "coco", tmp_path / "work"
    kit.write_coco(root, "val2017", {"a.jpg": b"abc"}, {"a.jpg": ["a red cat"]})
    (root / "more").mkdir()
    (root / "more" / "b.jpg").write_bytes(b"xyz")
    (root / "val2017" / "more").symlink_to(root / "more")
    (root / "val2017" / "loop").symlink_to(root / "val2017")  # must not recurse forever
    (root / "val2017" / "out").symlink_to(tmp_path)  # outside the root: not walked
    first = acquire(str(root), work)["identity"]
    _edit_in_place(root / "more" / "b.jpg", b"xyw")
    assert acquire(str(root), work)["identity"] != first


def test_directory_errors(tmp_path):
    with pytest.raises(UserError, match="missing: no such directory"):
        acquire(str(tmp_path / "missing"), tmp_path)
    (tmp_path / "flat").mkdir()
    with pytest.raises(UserError, match="no annotations/ directory"):
        acquire(str(tmp_path / "flat"), tmp_path)
    (tmp_path / "flat" / "annotations").mkdir()
    with pytest.raises(UserError, match="no captions_train"):
        acquire(str(tmp_path / "flat"), tmp_path)


def test_synthetic_is_generated_once(tmp_path):
    a = acquire("synthetic", tmp_path, limit=10, seed=3)
    marker = Path(a["root"]) / "_SUCCESS"
    stamp = marker.stat().st_mtime_ns
    assert acquire("synthetic", tmp_path, limit=10, seed=3) == a
    assert marker.stat().st_mtime_ns == stamp
    assert a["splits"] == {"train2017": "train", "val2017": "val"}
    assert acquire("synthetic", tmp_path, limit=10, seed=4)["identity"] != a["identity"]
    assert acquire("synthetic", tmp_path, limit=11, seed=3)["identity"] != a["identity"]


@pytest.mark.usefixtures("any_free_disk")
def test_official_source_is_verified_against_the_table(file_server, kit, tmp_path, monkeypatch):
    from colorfeat.sources import official
    from colorfeat.sources.download import Checksum

    archives = _mirror(file_server, kit, "2017")
    monkeypatch.setattr(official, "OFFICIAL_BASE", file_server.url)
    with pytest.raises(UserError, match="train2017.zip: expected 19336861798 bytes"):
        acquire("coco2017", tmp_path, progress=False)
    table = {
        path.rsplit("/", 1)[1]: Checksum(len(data), hashlib.sha256(data).hexdigest())
        for path, data in archives.items()
    }
    src = acquire("coco2017", tmp_path, checksums=table, progress=False)
    assert src["splits"] == {"train2017": "train", "val2017": "val"}
    assert (Path(src["root"]) / "val2017" / "001.jpg").is_file()
    assert not any(p == "/SHA256SUMS" for _, p, _ in file_server.requests)
