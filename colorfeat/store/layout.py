"""Where things sit in a store root and how to reach them: the root's names (versions/, LATEST,
staging prefix, the version-id pattern), the LATEST pointer as read back (checked: a version id,
nothing else), and walking a version's arrays and chunk keys. A root's file system comes from
`colorfeat.filesystems`, shared with the object-store shards of a source."""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import fsspec
import zarr

from colorfeat.errors import UserError

VERSIONS = "versions"
LATEST = "LATEST"
TMP_PREFIX = ".tmp-"
PINS = "pins"  # ROOT/pins/<id>: kept by gc whatever its age
RETIRED = "retired"  # ROOT/retired/<id>: when it stopped being LATEST (ISO time)
VERSION_ID = re.compile(r"[0-9a-f]{16}")


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in fs.protocol or "local" in fs.protocol


def is_url(path: str) -> bool:
    """Whether `path` names a remote location (not a local path or file:// URL)."""
    return "://" in path and not path.startswith("file://")


def join_url(root: str, rel: str) -> str:
    return f"{str(root).rstrip('/')}/{rel}"


def require_local_dir(fs: fsspec.AbstractFileSystem, base: str, shown: str) -> None:
    if is_local(fs) and not Path(base).is_dir():
        what = "not a directory" if Path(base).exists() else "no such directory"
        raise UserError(f"{what}: {shown}")


def read_latest(fs: fsspec.AbstractFileSystem, base: str, shown: str) -> str | None:
    """The version id ROOT/LATEST holds, or None without one; UserError for anything but an id
    (a path such as `../../other/versions/<id>` never leads out of the root)."""
    try:
        text = fs.cat_file(f"{base}/{LATEST}")
    except (FileNotFoundError, NotADirectoryError):
        return None
    vid = text.decode("utf-8", "replace").strip()
    if not VERSION_ID.fullmatch(vid):
        raise UserError(
            f"{shown}: {LATEST} holds {vid[:80]!r}, not a version id (16 hex digits); "
            f"point it at one of {VERSIONS}/ (colorfeat store ls {shown})"
        )
    return vid


def store_root_above(path: Path) -> Path | None:
    """The local store root that holds `path` (itself excluded), if any."""
    for above in path.absolute().parents:
        if is_store_root(above):
            return above
    return None


def is_store_root(path: Path) -> bool:
    versions = path / VERSIONS
    if not versions.is_dir():
        return False
    if (path / LATEST).is_file():
        return True
    return any((v / "zarr.json").is_file() for v in versions.iterdir())


def arrays(group: zarr.Group, prefix: str = "") -> Iterator[tuple[str, zarr.Array]]:
    """(path, array) of every array under `group`, depth first, sorted by name."""
    for name, arr in sorted(group.arrays()):
        yield prefix + name, arr
    for name, sub in sorted(group.groups()):
        yield from arrays(sub, f"{prefix}{name}/")


def chunk_regions(arr: zarr.Array) -> Iterator[tuple[str, tuple[slice, ...]]]:
    """(storage key, region) of every object the array's grid (shards or chunks) should hold."""
    size = arr.shards or arr.chunks
    grid = [math.ceil(s / c) for s, c in zip(arr.shape, size, strict=True)]
    for coords in itertools.product(*(range(g) for g in grid)):
        region = tuple(
            slice(i * c, min((i + 1) * c, s))
            for i, c, s in zip(coords, size, arr.shape, strict=True)
        )
        yield arr.metadata.encode_chunk_key(coords), region


def dtype_name(arr: zarr.Array) -> str:
    return "str" if arr.dtype.kind in "OTU" else str(arr.dtype)


def local_files(path: Path) -> set[str]:
    return set(walk_files(path))


def walk_files(root: Path) -> list[str]:
    """Every regular file under `root`, as relative POSIX paths in path order (symlinks are
    neither followed nor listed). A version holds thousands of chunk files: one scandir per
    folder, not a stat per entry as pathlib's rglob and is_file."""
    out: list[str] = []
    folders = [("", str(root))]
    while folders:
        prefix, folder = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append((f"{prefix}{entry.name}/", entry.path))
                elif entry.is_file(follow_symlinks=False):
                    out.append(prefix + entry.name)
    return sorted(out, key=lambda r: r.split("/"))


def remote_files(fs: fsspec.AbstractFileSystem, base: str) -> dict[str, int]:
    """Every file under `base` with its size, relative to `base`."""
    fs.invalidate_cache()
    found = fs.find(base, detail=True)
    cut = len(base.rstrip("/")) + 1
    return {p[cut:]: int(info.get("size") or 0) for p, info in found.items()}


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
