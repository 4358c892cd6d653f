"""Downloads: resume after a dropped connection, retries, verification; safe zip extraction."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile

import pytest

from colorfeat.download import (
    checksums_from_listing,
    download,
    official_checksums,
    safe_extract,
)
from colorfeat.errors import UserError

FAST = {"backoff": (0.01, 0.05), "progress": False}


def _payload(n: int = 300_000) -> bytes:
    return os.urandom(n)


def test_resumes_after_drop_and_500(file_server, tmp_path, capfd):
    data = _payload()
    file_server.files["/zips/a.zip"] = data
    file_server.fail_first.add("/zips/a.zip")
    file_server.drop_once.add("/zips/a.zip")
    sha = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "a.zip"
    url = f"{file_server.url}/zips/a.zip"
    got = download(url, dest, size=len(data), sha256=sha, backoff=(0.01, 0.05), progress=True)
    out, err = capfd.readouterr()
    assert out == "" and f"downloading {url}" in err  # progress goes to stderr only
    assert dest.read_bytes() == data
    assert got["sha256"] == sha
    assert not dest.with_name("a.zip.part").exists()
    gets = [r for r in file_server.requests if r[0] == "GET"]
    assert len(gets) == 3  # 500, dropped half-way, resumed
    assert gets[2][2] == f"bytes={len(data) // 2}-"  # the resume asked only for the rest
    assert file_server.sent["/zips/a.zip"] < 2 * len(data)
    assert file_server.sent["/zips/a.zip"] == len(data)


def test_verified_file_is_not_fetched_again(file_server, tmp_path):
    data = _payload(1000)
    file_server.files["/x.bin"] = data
    sha = hashlib.sha256(data).hexdigest()
    download(f"{file_server.url}/x.bin", tmp_path / "x.bin", size=1000, sha256=sha, **FAST)
    n = len(file_server.requests)
    again = download(f"{file_server.url}/x.bin", tmp_path / "x.bin", sha256=sha, **FAST)
    assert again["bytes_fetched"] == 0 and len(file_server.requests) == n


def test_wrong_checksum_is_refused_and_not_kept(file_server, tmp_path):
    file_server.files["/x.bin"] = _payload(5000)
    dest = tmp_path / "x.bin"
    with pytest.raises(UserError, match="SHA-256 mismatch"):
        download(f"{file_server.url}/x.bin", dest, size=5000, sha256="0" * 64, **FAST)
    assert not dest.exists()
    assert not dest.with_name("x.bin.part").exists()


def test_wrong_size_is_refused(file_server, tmp_path):
    file_server.files["/x.bin"] = _payload(5000)
    with pytest.raises(UserError, match="expected 4000 bytes"):
        download(f"{file_server.url}/x.bin", tmp_path / "x.bin", size=4000, **FAST)
    assert not (tmp_path / "x.bin").exists()


def test_missing_file_is_a_clear_error(file_server, tmp_path):
    with pytest.raises(UserError, match="HTTP 404"):
        download(f"{file_server.url}/nope.zip", tmp_path / "nope.zip", **FAST)


def test_persistent_server_errors_give_up(file_server, tmp_path):
    file_server.files["/x.bin"] = b"abc"
    file_server.fail_first.add("/x.bin")
    with pytest.raises(UserError, match="after 1 attempts"):
        download(f"{file_server.url}/x.bin", tmp_path / "x.bin", attempts=1, **FAST)


def test_no_server_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="cannot download"):
        download("http://127.0.0.1:9/x.zip", tmp_path / "x.zip", attempts=2, **FAST)


def test_official_table_is_shipped():
    table = official_checksums()
    assert set(table) == {
        "train2014.zip",
        "val2014.zip",
        "train2017.zip",
        "val2017.zip",
        "annotations_trainval2014.zip",
        "annotations_trainval2017.zip",
    }
    assert table["val2017.zip"].size == 815585330
    assert len(table["val2017.zip"].sha256) == 64


def test_sha256sums_listing():
    text = f"{'a' * 64}  zips/train2014.zip\n{'B' * 64} *annotations_trainval2014.zip\njunk\n"
    got = checksums_from_listing(text)
    assert got["train2014.zip"].sha256 == "a" * 64
    assert got["annotations_trainval2014.zip"].sha256 == "b" * 64
    assert len(got) == 2


# --------------------------------------------------------------------------- extraction


def test_safe_extract_is_atomic_and_complete(tmp_path, kit):
    archive = tmp_path / "val.zip"
    archive.write_bytes(kit.zip_bytes({"val2014/a.jpg": b"1", "val2014/b.jpg": b"22"}))
    dest = tmp_path / "root"
    dest.mkdir()
    assert safe_extract(archive, dest) == ["val2014"]
    assert (dest / "val2014" / "b.jpg").read_bytes() == b"22"
    assert [p.name for p in dest.iterdir()] == ["val2014"]  # nothing left aside


def test_safe_extract_prefix(tmp_path, kit):
    archive = tmp_path / "ann.zip"
    members = {"annotations/captions_val2014.json": b"{}", "annotations/instances.json": b"{}"}
    archive.write_bytes(kit.zip_bytes(members))
    safe_extract(archive, tmp_path, prefix="annotations/captions_")
    assert [p.name for p in (tmp_path / "annotations").iterdir()] == ["captions_val2014.json"]


@pytest.mark.parametrize("name", ["../evil.txt", "val2014/../../evil.txt", "/etc/evil.txt"])
def test_path_escape_is_refused(tmp_path, kit, name):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(kit.zip_bytes({"val2014/ok.jpg": b"x", name: b"pwned"}))
    dest = tmp_path / "out" / "root"
    dest.mkdir(parents=True)
    with pytest.raises(UserError, match="refusing .*bad.zip"):
        safe_extract(archive, dest)
    assert not (tmp_path / "out" / "evil.txt").exists()
    assert list(dest.iterdir()) == []


def test_symlink_member_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("val2014/link.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    archive = tmp_path / "link.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(UserError, match="symbolic link"):
        safe_extract(archive, tmp_path)


def test_crc_error_is_refused(tmp_path, kit):
    data = bytearray(kit.zip_bytes({"val2014/a.jpg": b"hello world" * 100}))
    at = bytes(data).index(b"hello world")
    data[at + 5] ^= 0xFF  # flip a byte of the stored member, not of the headers
    archive = tmp_path / "crc.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt zip archive"):
        safe_extract(archive, tmp_path / "out")


def test_not_a_zip_is_refused(tmp_path):
    archive = tmp_path / "fake.zip"
    archive.write_bytes(b"<html>mirror error page</html>")
    with pytest.raises(UserError, match="not a readable zip archive"):
        safe_extract(archive, tmp_path)
