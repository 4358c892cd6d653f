"""Store safety: whose staging folders a publisher may remove, atomic state files, and store
roots refused before any work."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from colorfeat import parallel, store
from colorfeat.constants import STORE_SCHEMA
from colorfeat.parallel import write_atomic
from colorfeat.store import OWNER, STALE_AFTER_S, TMP_PREFIX, clean_stale_staging
from colorfeat.store import staging as store_staging
from flows.cli.colorfeat import app

VID = "0123456789abcdef"


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def staging(versions: Path, name: str, owner: dict | None, age_s: float = 0) -> Path:
    folder = versions / f"{TMP_PREFIX}{name}"
    (folder / "version").mkdir(parents=True)
    if owner is not None:
        (folder / OWNER).write_text(json.dumps(owner))
    then = time.time() - age_s
    for path in (folder / OWNER, folder):
        if path.exists():
            os.utime(path, (then, then))
    return folder


def test_only_provably_dead_staging_folders_are_removed(tmp_path) -> None:
    versions = tmp_path / "versions"
    here = store_staging._host_id()
    me = {"host": here, "pid": os.getpid(), "started": store_staging._process_start(os.getpid())}
    gone = dead_pid()
    elsewhere = {"host": "other-node/pid:[4026531836]", "pid": gone, "started": 1.0}
    folders = {
        # another host's live build: its pid means nothing here, so it is kept while fresh
        "foreign-fresh": staging(versions, "foreign-fresh", elsewhere, age_s=60),
        "foreign-stale": staging(versions, "foreign-stale", elsewhere, age_s=STALE_AFTER_S + 60),
        "no-record-fresh": staging(versions, "no-record-fresh", None, age_s=60),
        "live-local": staging(versions, "live-local", me),
        # a killed local build, and one whose pid now belongs to another process
        "dead-local": staging(versions, "dead-local", {**me, "pid": gone}),
        "reused-pid": staging(versions, "reused-pid", {**me, "started": me["started"] - 3600}),
    }
    removed = clean_stale_staging(versions)
    expect_removed = {"foreign-stale", "dead-local", "reused-pid"}
    assert {p.name.removeprefix(TMP_PREFIX) for p in removed} == expect_removed
    for name, folder in folders.items():
        assert folder.exists() == (name not in expect_removed), name


def test_a_new_staging_folder_records_its_owner(tmp_path) -> None:
    folder = store_staging.new_staging(tmp_path, VID)
    owner = json.loads((folder / OWNER).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == store_staging._host_id()
    assert owner["started"] == pytest.approx(store_staging._process_start(os.getpid()), abs=1e-3)
    assert clean_stale_staging(tmp_path) == []


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    marker = tmp_path / "_SUCCESS"
    write_atomic(marker, '{"old": 1}')

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(parallel.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        write_atomic(marker, '{"new": 2}')
    assert json.loads(marker.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["_SUCCESS"]


def test_an_atomic_write_never_writes_through_a_planted_temp_name(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    names = iter(["planted", "planted", "fresh"])
    monkeypatch.setattr(parallel.secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".LATEST.planted.tmp").symlink_to(victim)
    write_atomic(tmp_path / "LATEST", "0123456789abcdef\n")
    assert victim.read_text() == "keep me"
    assert (tmp_path / "LATEST").read_text() == "0123456789abcdef\n"
    assert not (tmp_path / "LATEST").is_symlink()
    assert (tmp_path / ".LATEST.planted.tmp").is_symlink()  # left alone, never opened


def test_a_stage_commit_writes_its_marker_atomically(tmp_path, monkeypatch) -> None:
    partial, out = tmp_path / "stage.partial", tmp_path / "stage"
    partial.mkdir()
    (partial / "data.npy").write_bytes(b"x" * 10)
    written = []
    monkeypatch.setattr(parallel, "write_atomic", lambda p, d: written.append(Path(p).name))
    parallel.commit(partial, out, {"n": 1})
    assert written == ["_SUCCESS"] and (out / "data.npy").is_file()


# --------------------------------------------------------------------------- wrong --store paths


@pytest.fixture
def published(tmp_path) -> Path:
    """A store root with one (header-only) version and LATEST, as publish leaves it."""
    root = tmp_path / "store"
    version = root / "versions" / VID
    version.mkdir(parents=True)
    meta = {"zarr_format": 3, "node_type": "group", "attributes": {"schema": STORE_SCHEMA}}
    (version / "zarr.json").write_text(json.dumps(meta))
    (root / "LATEST").write_text(VID + "\n")
    return root


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _run(tmp_path: Path, store_arg: str):
    work = tmp_path / "work"
    args = ["run", "--source", "synthetic", "--store", store_arg, "--work-dir", str(work)]
    result = CliRunner().invoke(app, [*args, "--limit", "8", "--weights", "none"])
    assert not work.exists()  # refused before anything ran
    return result


@pytest.mark.parametrize("inside", [f"versions/{VID}", "LATEST", "versions", f"versions/{VID}/x"])
def test_run_refuses_a_path_inside_a_store_naming_the_root(published, tmp_path, inside) -> None:
    before = _files(published)
    result = _run(tmp_path, str(published / inside))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("colorfeat: error: ")
    assert f"use --store {published}\n" in result.stderr
    assert _files(published) == before


def test_run_refuses_a_file_and_a_foreign_zarr_group(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "other.zarr").mkdir()
    (tmp_path / "other.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    for bad, message in [("notes.txt", "is a file"), ("other.zarr", "is a zarr group")]:
        result = _run(tmp_path, str(tmp_path / bad))
        assert result.exit_code == 1 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1


def test_a_version_inside_an_object_store_url_is_refused(tmp_path) -> None:
    result = _run(tmp_path, f"s3://bucket/colorfeat/versions/{VID}")
    assert result.exit_code == 1
    assert "use --store s3://bucket/colorfeat\n" in result.stderr


def test_a_store_root_and_a_new_directory_are_accepted(published, tmp_path) -> None:
    store.check_store_root(published)
    store.check_store_root(tmp_path / "new" / "store")
    store.check_store_root("s3://bucket/colorfeat")


def test_store_info_on_a_missing_path_says_no_such_directory(tmp_path) -> None:
    result = CliRunner().invoke(app, ["store", "info", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert result.stderr == f"colorfeat: error: no such directory: {tmp_path / 'nowhere'}\n"
    result = CliRunner().invoke(app, ["store", "ls", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "no such directory" in result.stderr
