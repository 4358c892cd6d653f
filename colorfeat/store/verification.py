"""`verify`: every chunk of a published version read back against its manifest (size, CRC-32)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from colorfeat.errors import UserError
from colorfeat.filesystems import filesystem
from colorfeat.store.layout import VERSION_ID, VERSIONS, join_url, read_latest
from colorfeat.store.manifest import crc32
from colorfeat.store.reader import open_store


@dataclass
class Verified:
    """What `verify` found: the version, how many files and bytes it read, and every problem."""

    version: str
    path: str
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    path: str | Path, version: str | None = None, *, storage_options: dict | None = None
) -> Verified:
    """Read every file of a version (a root's LATEST, `version` of a root, or a version path)
    and compare it with the version's manifest; the problems are listed, one line each.

    UserError when the version cannot be opened or has no manifest (published before manifests).
    """
    target = str(path).rstrip("/")
    if version is not None:
        if not VERSION_ID.fullmatch(version):
            raise UserError(f"{version!r} is not a version id (16 hex digits)")
        fs, base = filesystem(target, storage_options)
        read_latest(fs, base, target)  # a root, whose pointer (if any) is sane
        target = join_url(target, f"{VERSIONS}/{version}")
    v = open_store(target, storage_options=storage_options)
    if v.manifest is None:
        raise UserError(f"store version {v.version} has no chunk manifest (published before them)")
    fs, base = filesystem(v.path, storage_options)
    found = Verified(v.version, v.path)
    present = v.files()
    for rel, (size, crc) in sorted(v.manifest.items()):
        if rel not in present:
            found.problems.append(f"{rel}: missing")
            continue
        data = fs.cat_file(f"{base}/{rel}")
        found.files += 1
        found.bytes += len(data)
        if len(data) != size:
            found.problems.append(f"{rel}: {len(data)} bytes, the manifest says {size}")
        elif crc32(data) != crc:
            found.problems.append(f"{rel}: damaged (CRC-32 differs from the manifest)")
    return found
