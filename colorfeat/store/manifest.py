"""The chunk manifest of a version, and reading chunks against it.

Publishing writes the group `manifest/` into a version, whose attrs list every file under the
version (chunks and array metadata, all but the root `zarr.json` and the manifest's own) with its
size and CRC-32; the root attrs carry the SHA-256 of the manifest's `zarr.json`, so the root
vouches for the manifest and the manifest for every chunk. `GuardedStore` is the zarr store every
reader of this project reads through: a chunk that is missing raises instead of reading as fill
values, and a chunk that differs from the manifest (size or CRC-32) raises before it is decoded;
both as one line naming array and chunk.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import AsyncGenerator, Iterable
from pathlib import Path

import fsspec
import zarr
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from colorfeat.errors import UserError
from colorfeat.store.layout import walk_files
from colorfeat.store.schema import ATTR_MANIFEST, MANIFEST_FILE, MANIFEST_GROUP

FORMAT = 1
METADATA = "zarr.json"
# Metadata names zarr may probe for (v3, and v2 when it looks for an older group): never chunks.
METADATA_NAMES = frozenset({METADATA, ".zgroup", ".zattrs", ".zarray", ".zmetadata"})


class ChunkError(UserError):
    """A chunk of a published version is missing or damaged."""


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def build_manifest(path: Path, previous: Path | None = None) -> dict:
    """The manifest's attrs of the version built at `path`. A file that is the same file (a hard
    link) as the one at the same place in the `previous` local version takes its size and CRC-32
    from that version's manifest, unread: a rebuild reads only the chunks it wrote."""
    known = _local_manifest(previous) if previous is not None else {}
    files = {}
    for rel in walk_files(path):
        file = path / rel
        if rel in (METADATA, MANIFEST_FILE):
            continue
        if rel in known and _same_file(file, previous / rel):
            files[rel] = list(known[rel])
            continue
        data = file.read_bytes()
        files[rel] = [len(data), crc32(data)]
    return {"format": FORMAT, "files": files}


def _local_manifest(version: Path) -> dict:
    try:
        attr = json.loads((version / METADATA).read_text())["attributes"].get(ATTR_MANIFEST)
        return load_manifest(fsspec.filesystem("file"), str(version), attr) or {}
    except (OSError, ValueError, KeyError, ChunkError):
        return {}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def write_manifest(path: Path, previous: Path | None = None) -> dict:
    """Write the manifest group of the version built at `path` -> the root attr naming it."""
    group = zarr.open_group(str(path), mode="r+").require_group(MANIFEST_GROUP)
    group.attrs.update(build_manifest(path, previous))
    raw = (path / MANIFEST_FILE).read_bytes()
    return {"file": MANIFEST_FILE, "sha256": hashlib.sha256(raw).hexdigest()}


def load_manifest(fs: fsspec.AbstractFileSystem, base: str, attr: dict | None) -> dict | None:
    """{relative path: [size, crc32]} of a version, or None for one published without a manifest.

    Raises ChunkError when the manifest is missing or is not the one the root attrs name.
    """
    if not attr:
        return None
    try:
        raw = fs.cat_file(f"{base}/{MANIFEST_FILE}")
    except FileNotFoundError:
        raise ChunkError(f"{base}: its chunk manifest {MANIFEST_FILE} is missing") from None
    if hashlib.sha256(raw).hexdigest() != attr.get("sha256"):
        raise ChunkError(f"{base}: {MANIFEST_FILE} is not the manifest its zarr.json names")
    doc = json.loads(raw).get("attributes", {})
    return {k: (int(v[0]), int(v[1])) for k, v in doc["files"].items()}


def chunk_name(key: str) -> tuple[str, str]:
    """(array path, chunk) of a chunk key: "train/rgb/c/0/0/0/0" -> ("train/rgb", "0.0.0.0")."""
    array, sep, coords = key.rpartition("/c/")
    if not sep:
        return key.rpartition("/")[0] or key, key.rpartition("/")[2]
    return array, coords.replace("/", ".")


def damaged(where: str, key: str, what: str) -> ChunkError:
    array, chunk = chunk_name(key)
    return ChunkError(f"store version {where}: array {array}, chunk {chunk}: {what}")


class GuardedStore(WrapperStore):
    """A read-only zarr store that raises ChunkError for a missing chunk, and, with a manifest,
    for a chunk whose size or CRC-32 differs from it."""

    def __init__(self, store, where: str, manifest: dict | None = None) -> None:
        super().__init__(store)
        self._where = where
        self._manifest = manifest

    @property
    def root(self) -> str:
        """The version this store reads (named in its errors)."""
        return self._where

    def __str__(self) -> str:
        return self._where

    def use_manifest(self, manifest: dict | None) -> None:
        """Check chunks against `manifest` from now on (read from the version's own attrs)."""
        self._manifest = manifest

    def _with_store(self, store):
        return type(self)(store, self._where, self._manifest)

    def _check(self, key: str, buf: Buffer | None, byte_range: ByteRequest | None) -> None:
        if key.rpartition("/")[2] in METADATA_NAMES:
            return
        if buf is None:
            raise damaged(self._where, key, "missing (a version holds every chunk)")
        if self._manifest is None or byte_range is not None:
            return
        expected = self._manifest.get(key)
        if expected is None:
            raise damaged(self._where, key, "not in the version's manifest")
        data = buf.to_bytes()
        if (len(data), crc32(data)) != expected:
            raise damaged(self._where, key, "does not match the manifest (damaged)")

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        buf = await self._store.get(key, prototype, byte_range)
        self._check(key, buf, byte_range)
        return buf

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        bufs = await self._store.get_partial_values(prototype, key_ranges)
        for (key, byte_range), buf in zip(key_ranges, bufs, strict=True):
            self._check(key, buf, byte_range)
        return bufs

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)
