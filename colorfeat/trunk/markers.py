"""Durable done-markers of feature chunks: how a killed extraction knows what it need not redo.

`partial/_chunks_done/<split>/<chunk index>` is an empty file, made only after the chunk it vouches
for is flushed to disk; `finish` checks that every chunk is marked, then drops the markers and the
stray temporary files of killed writes.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import zarr

from colorfeat.parallel import fsync_dir, is_stray
from colorfeat.reuse import chunk_file

MARKERS = "_chunks_done"  # beside features.zarr in the stage's partial directory


def mark_chunks(arr: zarr.Array, chunks: Sequence[int], markers: Path) -> None:
    """Flush stored chunks, then mark each done (an empty file appears whole or not at all; one
    directory fsync makes the markers durable)."""
    _fsync_chunks(arr, chunks)  # a marker must never outlive the chunk it vouches for
    markers.mkdir(parents=True, exist_ok=True)
    for c in chunks:
        (markers / str(c)).touch()
    fsync_dir(markers)


def marked_chunks(markers: Path) -> Iterator[int]:
    """The chunk indices marked done in a marker folder; other files there are not markers."""
    if markers.is_dir():
        yield from (int(p.name) for p in markers.iterdir() if p.name.isdecimal())


def finish(root: zarr.Group, partial: Path, splits: Sequence[str]) -> None:
    """Check every chunk is marked, then drop markers and stray temporary files of killed writes."""
    for split in splits:
        for _, arr in root[split].arrays():
            n_chunks = math.ceil(arr.shape[0] / arr.chunks[0])
            have = set(marked_chunks(partial / MARKERS / split))
            missing = [c for c in range(n_chunks) if c not in have]
            if missing:
                raise RuntimeError(f"feature chunks {missing[:5]} of {split} were never written")
    shutil.rmtree(partial / MARKERS, ignore_errors=True)
    for stray in _stray_files(Path(root.store.root)):
        with contextlib.suppress(OSError):  # an NFS `.nfs*` file stays while someone holds it
            stray.unlink()


def _fsync_chunks(arr: zarr.Array, chunks: Sequence[int]) -> None:
    for c in chunks:
        try:
            fd = os.open(chunk_file(arr, c), os.O_RDONLY)
        except FileNotFoundError:  # an all-fill chunk zarr did not store (publishing adds it)
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _stray_files(path: Path) -> Iterator[Path]:
    """Files a killed or concurrent writer left among the chunks (`x.partial`, `.nfs1234`)."""
    yield from (p for p in path.rglob("*") if is_stray(p.name) and p.is_file())
