"""Downloads: resume after a dropped connection, retries, verification; safe zip extraction."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile

import pytest

from colorfeat.errors import UserError
from colorfeat.retry import is_transient as flow_is_transient
from colorfeat.sources.download import (
    NetworkError,
    checksums_from_listing,
    download,
    fetch_text,
    is_transient,
    official_checksums,
    probe,
    safe_extract,
)

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


# --------------------------------------------------------------------------- transient or not


def test_a_link_that_drops_every_k_bytes_still_finishes(file_server, tmp_path):
    data = _payload(64_000)
    file_server.files["/big.zip"] = data
    file_server.drop_after["/big.zip"] = 5_000  # 13 drops, far more than the 3 attempts allowed
    sha = hashlib.sha256(data).hexdigest()
    got = download(
        f"{file_server.url}/big.zip", tmp_path / "big.zip", sha256=sha, attempts=3, **FAST
    )
    assert got["sha256"] == sha and (tmp_path / "big.zip").read_bytes() == data
    ranges = [r[2] for r in file_server.requests if r[0] == "GET"]
    assert ranges == [None] + [f"bytes={k * 5_000}-" for k in range(1, 13)]
    assert file_server.sent["/big.zip"] == len(data)  # every byte sent once


def test_attempts_without_progress_still_give_up(file_server, tmp_path):
    file_server.files["/big.zip"] = _payload(20_000)
    file_server.drop_after["/big.zip"] = 5_000
    file_server.ignore_range.add("/big.zip")  # every retry starts over and is cut at 5000 again
    with pytest.raises(NetworkError, match="after 3 attempts without progress") as err:
        download(f"{file_server.url}/big.zip", tmp_path / "big.zip", attempts=3, **FAST)
    assert is_transient(err.value)
    gets = [r for r in file_server.requests if r[0] == "GET"]
    assert len(gets) == 4  # the first attempt grew the file; three more brought nothing new


def test_a_server_that_ignores_range_is_restarted_from_zero(file_server, tmp_path):
    data = _payload(40_000)
    file_server.files["/x.zip"] = data
    file_server.drop_once.add("/x.zip")
    file_server.ignore_range.add("/x.zip")
    sha = hashlib.sha256(data).hexdigest()
    got = download(
        f"{file_server.url}/x.zip", tmp_path / "x.zip", size=len(data), sha256=sha, **FAST
    )
    assert got["sha256"] == sha and (tmp_path / "x.zip").read_bytes() == data
    assert [r[2] for r in file_server.requests] == [None, f"bytes={len(data) // 2}-"]


def test_a_clean_but_short_body_is_resumed(file_server, tmp_path):
    data = _payload(30_000)
    file_server.files["/x.zip"] = data
    file_server.short_once["/x.zip"] = 7_000  # a proxy that ends the body early, cleanly
    got = download(f"{file_server.url}/x.zip", tmp_path / "x.zip", size=len(data), **FAST)
    assert (tmp_path / "x.zip").read_bytes() == data and got["bytes_fetched"] == 23_000
    assert [r[2] for r in file_server.requests] == [None, "bytes=7000-"]


def test_416_with_the_whole_file_already_received_completes_after_verifying(file_server, tmp_path):
    data = _payload(10_000)
    file_server.files["/x.zip"] = data
    (tmp_path / "x.zip.part").write_bytes(data)  # a run killed between last byte and rename
    sha = hashlib.sha256(data).hexdigest()
    got = download(f"{file_server.url}/x.zip", tmp_path / "x.zip", sha256=sha, **FAST)
    assert got == {"path": str(tmp_path / "x.zip"), "sha256": sha, "bytes_fetched": 0}
    assert [r[2] for r in file_server.requests] == ["bytes=10000-"]


def test_416_for_a_part_that_is_not_the_file_starts_over(file_server, tmp_path):
    data = _payload(10_000)
    file_server.files["/x.zip"] = data
    (tmp_path / "x.zip.part").write_bytes(b"\0" * 12_000)  # longer than the file: not a prefix
    sha = hashlib.sha256(data).hexdigest()
    download(f"{file_server.url}/x.zip", tmp_path / "x.zip", sha256=sha, **FAST)
    assert (tmp_path / "x.zip").read_bytes() == data
    assert [r[2] for r in file_server.requests] == ["bytes=12000-", None]


@pytest.mark.parametrize("code", [500, 502, 503, 429, 408])
def test_server_errors_are_transient(file_server, tmp_path, code):
    file_server.busy_status = code
    file_server.files["/x.zip"] = b"abc"
    file_server.unavailable["/x.zip"] = 5
    with pytest.raises(NetworkError, match=f"HTTP {code}") as err:
        download(f"{file_server.url}/x.zip", tmp_path / "x.zip", attempts=2, **FAST)
    assert is_transient(err.value) and flow_is_transient(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("login", [None, "reader:wrong"])
def test_denied_and_missing_files_are_permanent_one_line_errors(file_server, tmp_path, login):
    file_server.login = "reader:s3cr3t-token"
    file_server.files["/x.zip"] = b"abc"
    host = file_server.url.removeprefix("http://")
    url = f"http://{login}@{host}/x.zip" if login else f"{file_server.url}/x.zip"
    with pytest.raises(UserError) as err:
        download(url, tmp_path / "x.zip", **FAST)
    assert not flow_is_transient(err.value)
    assert str(err.value).endswith("HTTP 401 (check the credentials in the URL)")
    assert "wrong" not in str(err.value) and len(file_server.requests) == 1  # not retried
    file_server.login = None
    with pytest.raises(UserError, match="HTTP 404") as err:
        download(f"{file_server.url}/nope.zip", tmp_path / "nope.zip", **FAST)
    assert not flow_is_transient(err.value)


def test_credentials_in_the_url_log_in_and_are_never_shown(file_server, tmp_path, capfd):
    data = _payload(20_000)
    file_server.login = "reader:s3cr3t-token"
    file_server.files["/x.zip"] = data
    file_server.fail_first.add("/x.zip")
    url = f"http://reader:s3cr3t-token@{file_server.url.removeprefix('http://')}/x.zip"
    download(url, tmp_path / "x.zip", size=len(data), backoff=(0.01, 0.05), progress=True)
    assert (tmp_path / "x.zip").read_bytes() == data
    _, err = capfd.readouterr()
    assert "downloading http://***@127.0.0.1:" in err and "s3cr3t" not in err
    with pytest.raises(UserError) as failed:
        download(url.replace("x.zip", "gone.zip"), tmp_path / "gone.zip", **FAST)
    assert "s3cr3t" not in str(failed.value) and "http://***@127.0.0.1" in str(failed.value)


def test_hash_mismatch_after_a_full_download_is_permanent(file_server, tmp_path):
    file_server.files["/x.bin"] = _payload(5000)
    with pytest.raises(UserError, match="SHA-256 mismatch") as err:
        download(f"{file_server.url}/x.bin", tmp_path / "x.bin", sha256="0" * 64, **FAST)
    assert not flow_is_transient(err.value)


@pytest.mark.parametrize("url", ["http://", "ftp://127.0.0.1/x.zip", "http://127.0.0.1:99999/x"])
def test_a_bad_url_is_permanent(tmp_path, url):
    with pytest.raises(UserError, match="not a valid") as err:
        download(url, tmp_path / "x.zip", **FAST)
    assert not flow_is_transient(err.value)


def test_no_server_is_transient(tmp_path):
    with pytest.raises(NetworkError, match="ConnectError") as err:
        download("http://127.0.0.1:9/x.zip", tmp_path / "x.zip", attempts=2, **FAST)
    assert flow_is_transient(err.value)
    with pytest.raises(NetworkError) as err:
        probe("http://127.0.0.1:9/x.zip")
    assert flow_is_transient(err.value)


def test_probe_and_listing_classify_failures(file_server):
    file_server.files["/a.zip"] = b"zip"
    assert probe(f"{file_server.url}/a.zip") and not probe(f"{file_server.url}/b.zip")
    file_server.unavailable["/a.zip"] = 1
    with pytest.raises(NetworkError, match="HTTP 503") as err:
        probe(f"{file_server.url}/a.zip")
    assert flow_is_transient(err.value)
    file_server.unavailable["/SHA256SUMS"] = 1
    with pytest.raises(NetworkError, match="HTTP 503"):
        fetch_text(f"{file_server.url}/SHA256SUMS")
    assert fetch_text(f"{file_server.url}/SHA256SUMS") is None  # 404: the mirror has none
    file_server.files["/SHA256SUMS"] = b"x" * 2_000
    with pytest.raises(UserError, match="larger than 1000 bytes"):
        fetch_text(f"{file_server.url}/SHA256SUMS", limit=1_000)
    file_server.login = "reader:s3cr3t-token"
    with pytest.raises(UserError, match="HTTP 401") as err:
        probe(f"{file_server.url}/a.zip")
    assert not flow_is_transient(err.value)
    file_server.login, file_server.busy_status = None, 403  # S3: 403 for a missing object
    file_server.unavailable["/a.zip"] = 2  # for the HEAD and for the one-byte GET
    assert not probe(f"{file_server.url}/a.zip")
