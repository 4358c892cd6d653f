"""WebDataset tar shards as a source: local or over http, read as a stream, hostile members."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from colorfeat.errors import UserError
from colorfeat.sources import SourceOptions, acquire, acquired, check, estimate, kind_of, shards
from colorfeat.sources.layout import hashed_split
from tests.colorfeat.test_source_karpathy import write_karpathy
from tests.colorfeat.test_source_table import _pictures


def _member(tar: tarfile.TarFile, name: str, data: bytes = b"", **kind) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in kind.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def shard_bytes(samples: dict[str, tuple[bytes, str]], extra=()) -> bytes:
    """A tar as img2dataset writes it: <key>.jpg, <key>.txt, <key>.json for each sample."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key, (picture, caption) in samples.items():
            _member(tar, f"{key}.jpg", picture)
            _member(tar, f"{key}.txt", caption.encode())
            _member(tar, f"{key}.json", json.dumps({"caption": caption, "url": "x"}).encode())
        for args in extra:
            _member(tar, *args[:2], **(args[2] if len(args) > 2 else {}))
    return buf.getvalue()


def write_shards(folder: Path, kit, n_shards: int = 2, per_shard: int = 3) -> list[Path]:
    """Shards 00000.tar... with their parquet and stats files beside, as img2dataset leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(n_shards):
        samples = {
            f"{s:05d}{i:04d}": (
                kit.jpeg_bytes(kit.colour_picture(10 * s + i)),
                f"a red thing {s}{i}",
            )
            for i in range(per_shard)
        }
        path = folder / f"{s:05d}.tar"
        path.write_bytes(shard_bytes(samples))
        (folder / f"{s:05d}.parquet").write_bytes(b"PAR1")
        (folder / f"{s:05d}_stats.json").write_text(json.dumps({"successes": per_shard}))
        paths.append(path)
    return paths


def test_a_directory_of_shards_is_read_and_reused_shard_by_shard(tmp_path, kit):
    folder = tmp_path / "shards"
    write_shards(folder, kit)
    assert kind_of(str(folder)).name == "webdataset"
    check(str(folder))
    assert estimate(str(folder), None).pictures == 6  # from the _stats.json files
    assert acquired(str(folder), tmp_path / "work") is None
    src = acquire(str(folder), tmp_path / "work")
    assert sum(src["counts"]["pictures"].values()) == 6 and src["counts"]["skipped"] == {}
    assert acquired(str(folder), tmp_path / "work") == src
    pattern = acquire(str(folder / "{00000..00001}.tar"), tmp_path / "work")
    assert pattern == src  # the same shards, named by a pattern


def test_a_new_shard_reads_only_that_shard(tmp_path, kit, monkeypatch):
    folder = tmp_path / "shards"
    write_shards(folder, kit)
    acquire(str(folder / "{00000..00001}.tar"), tmp_path / "work")
    write_shards(tmp_path / "more", kit, n_shards=3)
    (tmp_path / "more" / "00002.tar").rename(folder / "00002.tar")
    read = []
    original = shards.read_shard
    monkeypatch.setattr(shards, "read_shard", lambda f, out: read.append(out) or original(f, out))
    acquire(str(folder / "{00000..00002}.tar"), tmp_path / "work")
    assert len(read) == 1


def test_the_val_fraction_splits_shards_by_key_and_reuses_the_shards_read(
    tmp_path, kit, monkeypatch
):
    folder = tmp_path / "shards"
    write_shards(folder, kit, n_shards=2, per_shard=10)
    keys = [f"{s:05d}{i:04d}" for s in range(2) for i in range(10)]
    default = acquire(str(folder), tmp_path / "work")
    held = sum(hashed_split(k) == "val" for k in keys)
    assert default["counts"]["pictures"].get("val", 0) == held
    read = []
    original = shards.read_shard
    monkeypatch.setattr(shards, "read_shard", lambda f, out: read.append(out) or original(f, out))
    half = SourceOptions(val_fraction=0.5)
    assert acquired(str(folder), tmp_path / "work", options=half) is None
    src = acquire(str(folder), tmp_path / "work", options=half)
    assert read == []  # the shards read before, reused: only the split differs
    assert src["identity"] != default["identity"]
    assert src["counts"]["pictures"] == {
        "train": sum(hashed_split(k, 0.5) == "train" for k in keys),
        "val": sum(hashed_split(k, 0.5) == "val" for k in keys),
    }
    assert src["counts"]["pictures"]["val"] != held
    assert acquired(str(folder), tmp_path / "work", options=half) == src
    none_held = acquire(str(folder), tmp_path / "work", options=SourceOptions(val_fraction=0))
    assert none_held["counts"]["pictures"] == {"train": 20}


def test_hostile_members_and_keys_are_skipped_and_counted(tmp_path, kit, monkeypatch):
    picture = kit.jpeg_bytes(kit.colour_picture(1))
    extra = [
        ("/etc/evil.jpg", picture),
        ("../evil.jpg", picture),
        ("link.jpg", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
        ("dev.jpg", b"", {"type": tarfile.CHRTYPE}),
        ("big.jpg", picture + b"\0" * 4096),
        ("big.txt", b"a red thing"),
        ("lonely.jpg", picture),  # no caption
        ("alone.txt", b"a red thing with no picture"),
        ("latin.jpg", picture),
        ("latin.txt", "a r\xe9d thing".encode("latin-1")),  # not UTF-8
    ]
    monkeypatch.setattr(shards, "MAX_PICTURE_BYTES", len(picture) + 1024)
    good = {"good": (picture, "a red thing")}
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "00000.tar").write_bytes(shard_bytes(good, extra))
    src = acquire(str(tmp_path / "s"), tmp_path / "work")
    assert sum(src["counts"]["pictures"].values()) == 1
    assert src["counts"]["skipped"] == {
        "caption not UTF-8": 1, "caption without picture": 2, "link or device member": 2,
        "member too large": 1, "picture without caption": 2, "unsafe member name": 2,
    }  # fmt: skip
    assert not list(tmp_path.rglob("evil.jpg")) and not (tmp_path / "etc").exists()


def test_a_truncated_shard_keeps_what_it_read(tmp_path, kit):
    folder = tmp_path / "s"
    [path] = write_shards(folder, kit, n_shards=1, per_shard=4)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 5 // 8])
    src = acquire(str(folder), tmp_path / "work")
    assert 1 <= sum(src["counts"]["pictures"].values()) < 4
    assert src["counts"]["skipped"]["truncated or damaged shard"] == 1


def test_shards_over_http_with_a_brace_pattern(tmp_path, kit, file_server):
    for path in write_shards(tmp_path / "served", kit):
        file_server.files[f"/cc/{path.name}"] = path.read_bytes()
    url = f"{file_server.url}/cc/{{00000..00001}}.tar"
    assert kind_of(url).name == "webdataset"
    assert acquired(url, tmp_path / "work") is None and estimate(url, None).pictures is None
    src = acquire(url, tmp_path / "work")
    local = acquire(str(tmp_path / "served"), tmp_path / "work2")
    assert _pictures(Path(src["root"])) == _pictures(Path(local["root"]))
    gets = [p for method, p, _ in file_server.requests if method == "GET"]
    acquire(url, tmp_path / "work")  # again: the server is asked for versions only
    assert [p for method, p, _ in file_server.requests if method == "GET"] == gets
    del file_server.files["/cc/00001.tar"]
    with pytest.raises(UserError, match=r"cannot reach .*/cc/00001.tar: HTTP 404"):
        acquire(url, tmp_path / "work3")


def test_nothing_usable_is_one_line(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "00000.tar").write_bytes(shard_bytes({}, [("a.txt", b"a red thing")]))
    with pytest.raises(UserError, match="gave no picture with a caption"):
        acquire(str(tmp_path / "s"), tmp_path / "work")
    with pytest.raises(UserError, match="no shard file"):
        check(str(tmp_path / "{00000..00003}.tar"))


def test_shards_a_karpathy_file_and_a_table_of_the_same_data_agree(tmp_path, kit):
    folder = tmp_path / "pictures"
    names = {f"{i}.jpg": f"a red thing number {i}" for i in range(4)}
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(kit.jpeg_bytes(kit.colour_picture(i)))
    samples = {name[:-4]: ((folder / name).read_bytes(), text) for name, text in names.items()}
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "00000.tar").write_bytes(shard_bytes(samples))
    entries = [
        {"filename": n, "split": "train", "sentences": [{"raw": t}], "imgid": i}
        for i, (n, t) in enumerate(names.items())
    ]
    karpathy = write_karpathy(folder, kit, entries, [])
    table = folder / "captions.csv"
    table.write_text("file_name,caption\n" + "".join(f"{n},{t}\n" for n, t in names.items()))
    got = [
        _pictures(Path(acquire(str(source), tmp_path / f"w{i}")["root"]))
        for i, source in enumerate((tmp_path / "shards", karpathy, table))
    ]
    assert got[0] == got[1] == got[2] and len(got[0]) == 4


def test_shard_urls_with_credentials_are_used_and_never_recorded(tmp_path, kit, file_server):
    from colorfeat.redact import SECRETS_ENV, conceal

    token = "tok3n-5ecret"
    for path in write_shards(tmp_path / "served", kit):
        file_server.files[f"/cc/{path.name}"] = path.read_bytes()
    file_server.login = f"reader:{token}"
    host = file_server.url.removeprefix("http://")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRETS_ENV, "{}")
        concealed = conceal(f"http://reader:{token}@{host}/cc/{{00000..00001}}.tar")
        assert token not in concealed  # what `colorfeat run` hands the flow
        src = acquire(concealed, tmp_path / "work")
    assert sum(src["counts"]["pictures"].values()) == 6
    files = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert not [p for p in files if token.encode() in p.read_bytes()]


def test_what_is_and_is_not_a_shard_pattern(tmp_path):
    taken = {
        "data/{00000..00002}.tar": "webdataset",
        "https://h/cc3m/{00000..00331}.tar": "webdataset",
        "https://h/one.tar?sig=x": "webdataset",
        "https://tarball.example/coco": "mirror",
        str(tmp_path): "directory",
    }
    for value, kind in taken.items():
        assert kind_of(value).name == kind, value
    with pytest.raises(UserError, match="names over 100000 shards"):
        check(str(tmp_path / "{0..100000}.tar"))
    with pytest.raises(UserError, match=r"^--source \{a.tar: unbalanced braces$"):
        check("{a.tar")
