"""WebDataset tar shards in an object store (`s3://`), against a local moto server: read as the
same shards on disk are, reused by ETag, hostile members counted, missing shards one line."""

from __future__ import annotations

import tarfile
from pathlib import Path

import fsspec
import pytest

from colorfeat.errors import UserError
from colorfeat.parallel import completed
from colorfeat.sources import acquire, acquired, check, estimate, kind_of, shards, webdataset
from colorfeat.sources.download import NetworkError
from tests.colorfeat.test_source_table import _pictures
from tests.colorfeat.test_source_webdataset import shard_bytes, write_shards

BUCKET = "s3://colorfeat-test"


def _upload(folder: Path, prefix: str) -> dict[str, int]:
    """Every file of folder (shards, parquet and stats files) under prefix; {name: size}."""
    fs, _ = fsspec.core.url_to_fs(BUCKET)
    sizes = {}
    for path in sorted(folder.iterdir()):
        fs.pipe(f"{prefix.removeprefix('s3://')}/{path.name}", path.read_bytes())
        sizes[path.name] = path.stat().st_size
    return sizes


@pytest.fixture
def counted_reads(monkeypatch) -> list[Path]:
    """The shard folders read by `read_shard`, as they are read."""
    read: list[Path] = []
    original = shards.read_shard
    monkeypatch.setattr(shards, "read_shard", lambda f, out: read.append(out) or original(f, out))
    return read


def test_shards_in_s3_read_like_the_same_shards_on_disk(s3_endpoint, tmp_path, kit, counted_reads):
    served = tmp_path / "served"
    write_shards(served, kit)
    sizes = _upload(served, f"{BUCKET}/cc")
    pattern = f"{BUCKET}/cc/{{00000..00001}}.tar"
    assert kind_of(pattern).name == kind_of(f"{BUCKET}/cc/").name == "webdataset"
    check(pattern)
    assert acquired(pattern, tmp_path / "work") is None  # not known without asking the store
    found = estimate(pattern, None)  # from one listing and the `_stats.json` objects
    assert found.pictures == 6 and found.download_bytes == sizes["00000.tar"] + sizes["00001.tar"]

    src = acquire(pattern, tmp_path / "work")
    assert len(counted_reads) == 2
    assert acquire(pattern, tmp_path / "work") == src and len(counted_reads) == 2  # asked, not read
    listed = acquire(f"{BUCKET}/cc/", tmp_path / "work")  # a prefix: its *.tar, like a directory
    assert listed == src and len(counted_reads) == 2
    shards_read = [completed(p) for p in (tmp_path / "work" / "sources" / "shards").iterdir()]
    assert sorted(m["shard"] for m in shards_read) == [f"{BUCKET}/cc/0000{i}.tar" for i in (0, 1)]

    local = acquire(str(served), tmp_path / "work-local")
    assert _pictures(Path(src["root"])) == _pictures(Path(local["root"]))
    assert src["counts"] == local["counts"]


def test_a_changed_object_is_read_again_and_only_it(s3_endpoint, tmp_path, kit, counted_reads):
    write_shards(tmp_path / "a", kit)
    _upload(tmp_path / "a", f"{BUCKET}/changing")
    pattern = f"{BUCKET}/changing/{{00000..00001}}.tar"
    before = acquire(pattern, tmp_path / "work")
    write_shards(tmp_path / "b", kit, per_shard=2)
    fs, _ = fsspec.core.url_to_fs(BUCKET)
    fs.pipe("colorfeat-test/changing/00001.tar", (tmp_path / "b" / "00001.tar").read_bytes())
    after = acquire(pattern, tmp_path / "work")
    assert len(counted_reads) == 3  # the changed one only
    assert (
        sum(after["counts"]["pictures"].values()) == 5 != sum(before["counts"]["pictures"].values())
    )
    assert after["identity"] != before["identity"]


def test_hostile_members_in_an_s3_shard_are_skipped_and_counted(s3_endpoint, tmp_path, kit):
    picture = kit.jpeg_bytes(kit.colour_picture(1))
    extra = [
        ("/etc/evil.jpg", picture),
        ("../evil.jpg", picture),
        ("link.jpg", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
        ("lonely.jpg", picture),
    ]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "00000.tar").write_bytes(shard_bytes({"good": (picture, "a red cup")}, extra))
    _upload(tmp_path / "s", f"{BUCKET}/hostile")
    src = acquire(f"{BUCKET}/hostile/00000.tar", tmp_path / "work")
    assert sum(src["counts"]["pictures"].values()) == 1
    assert src["counts"]["skipped"] == {
        "link or device member": 1, "picture without caption": 1, "unsafe member name": 2,
    }  # fmt: skip
    assert not list(tmp_path.rglob("evil.jpg")) and not (tmp_path / "etc").exists()


def test_a_truncated_s3_shard_keeps_what_it_read(s3_endpoint, tmp_path, kit):
    [path] = write_shards(tmp_path / "s", kit, n_shards=1, per_shard=4)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 5 // 8])
    _upload(tmp_path / "s", f"{BUCKET}/truncated")
    src = acquire(f"{BUCKET}/truncated/00000.tar", tmp_path / "work")
    assert 1 <= sum(src["counts"]["pictures"].values()) < 4
    assert src["counts"]["skipped"]["truncated or damaged shard"] == 1


def test_missing_shards_and_refused_ones_are_one_line(s3_endpoint, tmp_path, kit, monkeypatch):
    write_shards(tmp_path / "s", kit)
    _upload(tmp_path / "s", f"{BUCKET}/two")
    with pytest.raises(
        UserError, match=r"^cannot reach s3://colorfeat-test/two/00002.tar: no such"
    ):
        acquire(f"{BUCKET}/two/{{00000..00002}}.tar", tmp_path / "work")
    with pytest.raises(UserError, match=r"^--source s3://colorfeat-test/none/: no \*.tar shards"):
        check(f"{BUCKET}/none/")
    monkeypatch.setattr(webdataset, "MAX_SHARD_BYTES", 1024)
    with pytest.raises(UserError, match=r"00000.tar holds .* over the limit of 1.0 KiB; refusing"):
        acquire(f"{BUCKET}/two/00000.tar", tmp_path / "work2")


def test_an_unreachable_store_is_a_network_error_the_flow_retries(
    s3_endpoint, tmp_path, monkeypatch
):
    # fsspec's configuration, as a user would set it (a file system of its own, left cached)
    once = {"retries": {"max_attempts": 1}}
    nowhere = {"endpoint_url": "http://127.0.0.1:9", "config_kwargs": once}
    monkeypatch.setitem(fsspec.config.conf, "s3", nowhere)  # port 9 (discard): nothing listens
    with pytest.raises(NetworkError, match=r"^cannot reach s3://colorfeat-test/cc/00000.tar: "):
        acquire(f"{BUCKET}/cc/00000.tar", tmp_path / "work")
    assert estimate(f"{BUCKET}/cc/00000.tar", None).download_bytes is None  # unknown, no error


def test_what_is_and_is_not_an_s3_source():
    for value in (f"{BUCKET}/cc/{{00000..00009}}.tar", f"{BUCKET}/cc/", f"{BUCKET}/cc/a.tar"):
        assert kind_of(value).name == "webdataset", value
    for value in (f"{BUCKET}/cc/{{a,b}}.zip", f"{BUCKET}/cc"):  # a prefix ends with its /
        with pytest.raises(UserError, match="is none of these"):
            kind_of(value)
