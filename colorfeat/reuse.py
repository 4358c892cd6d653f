"""Per-picture reuse between builds: what a rebuild takes from the previous build's stage output.

A stage that decodes or computes something per picture (images, features) records, beside its
output, which picture each row holds (`rows.json`: per split, the image ids in row order and the
SHA-256 of each picture's bytes) and a reuse key: everything else its rows depend on (its config
slice and code version; for features the images' reuse key too). A later build of the same stage
with the same reuse key (`previous`: the newest such output in the work dir) then takes every row
whose picture is unchanged from it and computes only the others.

The order rule (`order_rows`), which is what lets unchanged chunks be shared: a split keeps the
previous build's row order; a picture that is gone leaves a hole, which the new pictures fill
(in the order the captions stage lists them), then the last rows move into the holes that are
left; the remaining new pictures go at the end. A build without a previous one lists pictures in
the captions stage's order. Each picture's rows are the same, byte for byte, either way; only
their order depends on the history, and `image_id` says it.

`assemble` writes one chunk-aligned region of an output array: a chunk whose rows are the
previous output's rows at the same places, with the same encoding, is hard-linked from it (so the
new version shares the file, `st_ino` and all, with the previous one); any other chunk is written
from the rows taken from the previous output and the freshly computed ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from colorfeat.parallel import SUCCESS, write_atomic

ROWS = "rows.json"  # beside a stage's output: which picture each row holds, and its reuse key


def digest(data: bytes) -> str:
    """The content name of a picture: the SHA-256 of its bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


def reuse_key(**parts: Any) -> str:
    """A short hash of what a stage's rows depend on besides the pictures."""
    raw = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


# --------------------------------------------------------------------------- the record
@dataclass
class Rows:
    """Which picture each row of a stage's output holds (`rows.json`)."""

    reuse: str
    splits: dict[str, dict[str, list]] = field(default_factory=dict)  # {"ids", "digests"}
    files: dict[str, list] = field(default_factory=dict)  # file -> [size, mtime_ns, digest]
    skipped: dict[str, str] = field(default_factory=dict)  # digest -> why it is not used
    path: Path | None = None  # the output folder it was read from

    def ids(self, split: str) -> list[int]:
        return list(self.splits.get(split, {}).get("ids", []))

    def digests(self, split: str) -> list[str]:
        return list(self.splits.get(split, {}).get("digests", []))

    def save(self, folder: Path) -> None:
        doc = {"reuse": self.reuse, "splits": self.splits, "files": self.files}
        write_atomic(Path(folder) / ROWS, json.dumps({**doc, "skipped": self.skipped}))

    @classmethod
    def load(cls, folder: Path) -> Rows | None:
        """The record of a stage output folder; None if it has none or it does not parse."""
        try:
            doc = json.loads((Path(folder) / ROWS).read_text())
            return cls(
                str(doc["reuse"]), dict(doc["splits"]), dict(doc.get("files", {})),
                dict(doc.get("skipped", {})), Path(folder),
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            return None


def previous(out_dir: Path, key: str) -> Rows | None:
    """The newest finished output of the same stage (a sibling `<stage>-*` folder of `out_dir`
    with `_SUCCESS`) whose rows were made with reuse key `key`; None if there is none."""
    out_dir = Path(out_dir)
    stage = out_dir.name.rsplit("-", 1)[0]
    found: list[tuple[float, Rows]] = []
    for folder in out_dir.parent.glob(f"{stage}-*"):
        done = folder / SUCCESS
        if folder.name == out_dir.name or folder.name.endswith(".partial") or not done.is_file():
            continue
        rows = Rows.load(folder)
        if rows is not None and rows.reuse == key:
            found.append((done.stat().st_mtime, rows))
    return max(found, key=lambda f: f[0])[1] if found else None


# --------------------------------------------------------------------------- the order rule
def order_rows(before: Sequence[int] | None, now: Sequence[int]) -> list[int]:
    """The row order of a split's pictures (ids): `before`'s order, holes filled by new pictures,
    then by the last rows; new pictures left over at the end. Without `before`: `now`'s order."""
    if before is None:
        return list(now)
    wanted = set(now)
    rows: list[int | None] = [i if i in wanted else None for i in before]
    placed = {i for i in before if i in wanted}
    fresh = iter([i for i in now if i not in placed])
    for r, held in enumerate(rows):
        if held is None:
            rows[r] = next(fresh, None)
    rows += list(fresh)
    holes = [r for r, held in enumerate(rows) if held is None]
    for hole in holes:
        while rows and rows[-1] is None:
            rows.pop()
        if hole >= len(rows):
            break
        rows[hole] = rows.pop()
    while rows and rows[-1] is None:
        rows.pop()
    return [int(i) for i in rows if i is not None]


def source_rows(digests: Sequence[str], before: Sequence[str]) -> list[int | None]:
    """For each row of `digests`, a row of `before` with the same picture (the same place when it
    holds it), or None: the row must be computed."""
    first: dict[str, int] = {}
    for r, d in enumerate(before):
        first.setdefault(d, r)
    return [
        r if r < len(before) and before[r] == d else first.get(d) for r, d in enumerate(digests)
    ]


# --------------------------------------------------------------------------- writing rows
def chunk_file(arr: zarr.Array, chunk: int) -> Path:
    """The file of chunk `chunk` (along N) of an array in a local store."""
    key = arr.metadata.encode_chunk_key((chunk,) + (0,) * (arr.ndim - 1))
    return Path(arr.store.root, arr.path, key)


def same_encoding(a: zarr.Array, b: zarr.Array) -> bool:
    """Whether two arrays' chunks of the same rows are the same bytes: all but shape and attrs."""

    def encoding(arr: zarr.Array) -> dict:
        meta = arr.metadata.to_dict()
        return {k: v for k, v in meta.items() if k not in ("shape", "attributes")}

    return a.shards is None and b.shards is None and encoding(a) == encoding(b)


def link_chunk(src: Path, dst: Path) -> None:
    """Make `dst` the same file as `src` (a hard link put in place by rename); no `src` (a chunk
    zarr did not store): no `dst` either."""
    if not src.is_file():
        dst.unlink(missing_ok=True)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(8)}.tmp")
    os.link(src, tmp)
    os.replace(tmp, dst)


def assemble(
    out: zarr.Array,
    start: int,
    stop: int,
    before: zarr.Array | None,
    sources: Sequence[int | None],
    fresh: Callable[[np.ndarray], np.ndarray],
) -> dict[str, int]:
    """Write rows [start, stop) of `out` (whole chunks): row r is `before[sources[r - start]]`, or
    `fresh(rows)` for the rows whose source is None. -> {"linked": chunks, "written": chunks}."""
    n, c = out.shape[0], out.chunks[0]
    n_before = before.shape[0] if before is not None else 0
    linkable = before is not None and same_encoding(out, before)
    done = {"linked": 0, "written": 0}
    for lo in range(start, stop, c):
        hi = min(lo + c, n)
        rows = range(lo, hi)
        same_rows = min(lo + c, n_before) - lo == hi - lo
        if linkable and same_rows and all(sources[r - start] == r for r in rows):
            link_chunk(chunk_file(before, lo // c), chunk_file(out, lo // c))
            done["linked"] += 1
            continue
        out[lo:hi] = _gather(before, [sources[r - start] for r in rows], np.arange(lo, hi), fresh)
        done["written"] += 1
    return done


def _gather(before, sources, rows: np.ndarray, fresh) -> np.ndarray:
    """Rows `rows` of the output: from `before` where a source is given, else from `fresh`."""
    taken = np.array([s is not None for s in sources], dtype=bool)
    parts: dict[bool, np.ndarray] = {}
    if taken.any():
        wanted = np.array([s for s in sources if s is not None], dtype=np.int64)
        parts[True] = read_rows(before, wanted)
    if not taken.all():
        parts[False] = fresh(rows[~taken])
    first = parts[bool(taken[0])]
    data = np.empty((len(rows), *first.shape[1:]), dtype=first.dtype)
    for kind, block in parts.items():
        data[taken == kind] = block
    return data


def read_rows(arr: zarr.Array, wanted: Sequence[int] | np.ndarray) -> np.ndarray:
    """arr[wanted] for sorted or unsorted row indices, decoding each chunk they touch once: rows
    that are consecutive or share a chunk are read as one span."""
    wanted = np.asarray(wanted, dtype=np.int64)
    order = np.argsort(wanted, kind="stable")
    ranked = wanted[order]
    out = np.empty((len(wanted), *arr.shape[1:]), dtype=arr.dtype)
    c = arr.chunks[0]
    lo = 0
    while lo < len(ranked):
        hi = lo + 1
        while hi < len(ranked) and (
            ranked[hi] - ranked[hi - 1] <= 1 or ranked[hi] // c == ranked[hi - 1] // c
        ):
            hi += 1
        block = arr[int(ranked[lo]) : int(ranked[hi - 1]) + 1]
        out[order[lo:hi]] = block[ranked[lo:hi] - ranked[lo]]
        lo = hi
    return out
