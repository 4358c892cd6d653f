"""The `table` source kind: `--source captions.parquet` (or .csv, .tsv, .jsonl), a caption table.

One row per caption: a column naming the picture, one holding the caption, and optionally one
naming the split. The picture is a path relative to the table's folder or `--image-root` (it
must stay inside it, under the picture rules) or, as in the Parquet files Hugging Face datasets
publish, a struct holding the picture's `bytes` (and a `path`). A caption cell may hold one
caption or a list of them. Rows of one picture are gathered; splits are train*, val*, test*
(`restval` is train); a table without a split column holds out `--val-fraction` of the pictures
(one in five by default) for val, chosen by a hash of their name.

Columns are `--image-column`, `--caption-column` and `--split-column` where given, else found by
their usual names (`IMAGE_COLUMNS`, `CAPTION_COLUMNS`, `SPLIT_COLUMNS`).
Parquet is read with pyarrow in record batches, text tables line by line, and a picture held in
the table is written as it is read, so a table's size bounds the time it takes, not the memory.
Bad UTF-8 in a row, a path outside the folder, a missing or oversized picture, an empty caption
cell or an unknown split skips the row and is counted. It is written once into
WORK/sources/table-<identity> in the COCO layout (`colorfeat.sources.layout`); the identity
follows the table's size and time and those of each picture file it names (`IDENTITY_RULE`), and
the options given (`OPTIONS`): a picture root enters it through the files it holds.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import BinaryIO

from colorfeat.constants import MAX_PICTURE_BYTES
from colorfeat.errors import UserError
from colorfeat.hashing import value_hash
from colorfeat.parallel import commit, completed, partial_dir
from colorfeat.sources.directory import IDENTITY_RULE
from colorfeat.sources.files import open_bounded
from colorfeat.sources.kind import Request, SourceEstimate, SourceKind, SourceOptions, capped
from colorfeat.sources.layout import (
    LayoutWriter,
    fresh_dir,
    hashed_split,
    regular_picture,
    store_split,
)

SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl")
IMAGE_COLUMNS = ("image", "image_path", "file_name", "filename", "filepath", "file", "path", "img")
CAPTION_COLUMNS = ("caption", "captions", "text", "sentence", "sentences", "raw")
SPLIT_COLUMNS = ("split",)
MAX_TABLE_BYTES = 64 << 30  # read in batches or lines: this bounds the time, not the memory
MAX_FIELD_BYTES = 1 << 20  # one cell of a text table
WHAT = "caption table"
OPTIONS = ("image_column", "caption_column", "split_column", "image_root", "val_fraction")
READ = ("image_column", "caption_column", "split_column", "val_fraction")  # in the identity


def _is_table(source: str) -> bool:
    return "://" not in source and Path(source).suffix.lower() in SUFFIXES


def check(source: str) -> None:
    """The table is a regular file inside its folder under the size limit."""
    path = Path(source).expanduser()
    with open_bounded(path.parent, path, what=WHAT, limit=MAX_TABLE_BYTES):
        pass


def _text_rows(file: BinaryIO, suffix: str) -> Iterator[dict | None]:
    """The rows of a CSV, TSV or JSON Lines table; None for a row that is not UTF-8 or JSON."""
    text = io.TextIOWrapper(file, encoding="utf-8", errors="surrogateescape", newline="")
    if suffix == ".jsonl":
        rows: Iterator[object] = (_json_row(line) for line in text if line.strip())
    else:
        csv.field_size_limit(MAX_FIELD_BYTES)
        rows = csv.DictReader(text, delimiter="\t" if suffix == ".tsv" else ",")
    try:
        for row in rows:
            yield row if isinstance(row, dict) and all(_utf8(v) for v in row.values()) else None
    finally:
        text.detach()  # the file stays the caller's to close


def _json_row(line: str) -> object:
    try:
        return json.loads(line) if _utf8(line) else None
    except (ValueError, RecursionError):
        return None


def _utf8(value: object) -> bool:
    """False for text that held bytes that are not UTF-8 (kept as surrogates until here)."""
    if isinstance(value, list):
        return all(_utf8(v) for v in value)
    if not isinstance(value, str):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parquet_rows(file: BinaryIO) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(file).iter_batches(batch_size=256):
        yield from batch.to_pylist()


def _columns(path: Path, names: list[str], options: SourceOptions) -> tuple[str, str, str | None]:
    """(image, caption, split or None) columns of a table: those the options name, else found
    by their usual names."""
    names = [name for name in names if isinstance(name, str)]
    lower = {name.lower(): name for name in names}
    present = ", ".join(names[:20]) or "(none)"

    def find(what: str, choices: tuple[str, ...]) -> str | None:
        named = getattr(options, f"{what}_column")
        if named is None:
            return next((lower[c] for c in choices if c in lower), None)
        if named not in names:
            flag = f"--{what}-column"
            raise UserError(f"{path}: no column {named!r} ({flag}) among {present}")
        return named

    image, caption = find("image", IMAGE_COLUMNS), find("caption", CAPTION_COLUMNS)
    if image is None or caption is None:
        missing = "image" if image is None else "caption"
        usual = IMAGE_COLUMNS if image is None else CAPTION_COLUMNS
        raise UserError(
            f"{path}: no {missing} column among {present} (looked for {', '.join(usual)}; "
            f"name it with --{missing}-column)"
        )
    return image, caption, find("split", SPLIT_COLUMNS)


def _picture(folder: Path, cell: object) -> tuple[str, Path | bytes | str]:
    """(a name for the picture, its file, its bytes, or why it cannot be used)."""
    if isinstance(cell, dict):
        data, name = cell.get("bytes"), cell.get("path")
        if isinstance(data, bytes):
            named = name if isinstance(name, str) else ""
            key = named + ":" + hashlib.sha256(data).hexdigest()
            return key, data if len(data) <= MAX_PICTURE_BYTES else "too large"
        cell = name
    if not isinstance(cell, str) or not cell:
        return "", "no picture"
    return cell, regular_picture(folder, cell)


def _captions(cell: object) -> list[str]:
    if isinstance(cell, str):
        return [cell]
    if isinstance(cell, list):
        return [c for c in cell if isinstance(c, str)]
    return []


def _rows(path: Path, file: BinaryIO) -> Generator[dict | None, None, None]:
    suffix = path.suffix.lower()
    return _parquet_rows(file) if suffix == ".parquet" else _text_rows(file, suffix)


def picture_root(path: Path, options: SourceOptions) -> Path:
    """Where a table's picture paths start: `--image-root`, else the table's folder."""
    if options.image_root is None:
        return path.parent
    root = Path(options.image_root).expanduser()
    if not root.is_dir():
        raise UserError(f"--image-root {options.image_root} is not a directory")
    return root


def table_rows(
    path: Path, skipped: Counter[str], options: SourceOptions = SourceOptions()
) -> Iterator[tuple[str, str, Path | bytes, list]]:
    """(picture name, store split, picture, captions) of each usable row, read as a stream;
    what is skipped is counted into `skipped`."""
    root = picture_root(path, options)
    with (
        open_bounded(path.parent, path, what=WHAT, limit=MAX_TABLE_BYTES) as file,
        contextlib.closing(_rows(path, file)) as read,  # closed before the file, whatever happens
    ):
        try:
            yield from _gathered(path, root, read, skipped, options)
        except csv.Error as exc:  # a cell over MAX_FIELD_BYTES, a quote left open
            raise UserError(f"{WHAT} {path} cannot be read: {exc}") from None
        except Exception as exc:
            if type(exc).__module__.startswith("pyarrow"):  # not Parquet, or damaged
                raise UserError(f"{WHAT} {path} cannot be read: {exc}") from None
            raise


def _gathered(
    path: Path,
    root: Path,
    rows: Iterator[dict | None],
    skipped: Counter[str],
    options: SourceOptions,
) -> Iterator[tuple[str, str, Path | bytes, list[str]]]:
    """(picture name, store split, picture, captions) of each usable row; the rest counted."""
    columns = None
    for row in rows:
        if row is None:
            skipped["bad row (not UTF-8, not JSON)"] += 1
            continue
        columns = columns or _columns(path, list(row), options)
        image, caption, split_column = columns
        name, picture = _picture(root, row.get(image))
        texts = _captions(row.get(caption))
        split_cell = row.get(split_column) if split_column else None
        split = store_split(split_cell) if isinstance(split_cell, str) else None
        split = hashed_split(name, options.val_fraction) if split_column is None else split
        why = _why_not(picture, split, texts)
        if why:
            skipped[why] += 1
        else:
            yield name, split, picture, texts  # type: ignore[misc]


def _why_not(picture: Path | bytes | str, split: str | None, texts: list[str]) -> str | None:
    if isinstance(picture, str):
        return picture
    return "unknown split" if split is None else None if texts else "no caption"


@functools.lru_cache(maxsize=8)
def _named(
    path: Path, size: int, mtime_ns: int, options: SourceOptions
) -> tuple[tuple[str, str | None], ...]:
    """(name, real path, None for a picture held in the table) of each usable picture a table
    names: read once per version of it (for its identity, then its estimate)."""
    named: dict[str, str | None] = {}
    for name, _, picture, _ in table_rows(path, Counter(), options):
        named.setdefault(name, str(picture) if isinstance(picture, Path) else None)
    return tuple(named.items())


def _pictures(path: Path, options: SourceOptions) -> tuple[tuple[str, str | None], ...]:
    info = path.stat()
    return _named(path.resolve(), info.st_size, info.st_mtime_ns, options)


def identity(path: Path, options: SourceOptions = SourceOptions()) -> str:
    """table-<hash of the table's size and time, of each picture file it names: its path, size
    and time (`IDENTITY_RULE`), and of the options given that change what is read (`READ`)>;
    pictures held in the table are covered by the table's."""
    files = []
    for name, real in _pictures(path, options):
        if real is not None:
            picture = os.stat(real)
            files.append((name, picture.st_size, picture.st_mtime_ns))
    info = path.stat()
    table = [info.st_size, info.st_mtime_ns]
    ident = {"rule": IDENTITY_RULE, "table": table, "pictures": value_hash(files)}
    if read := options.given(READ):
        ident["read"] = read
    return "table-" + value_hash(ident, 16)


def convert(path: Path, out: Path, options: SourceOptions = SourceOptions()) -> dict:
    """Write the table's pictures and captions in the COCO layout under `out`, row by row (a
    picture held in the table is written as it is read, never kept)."""
    writer = LayoutWriter(out)
    seen: dict[str, tuple[str, int]] = {}
    for name, split, picture, texts in table_rows(path, writer.skipped, options):
        if name in seen:
            writer.add_captions(*seen[name], texts)
            continue
        seen[name] = (split, len(seen) + 1)
        writer.add(split, name, picture, texts, len(seen))
    return writer.finish()


def _cache_name(source: str, request: Request) -> str | None:
    path = Path(source).expanduser()
    return identity(path, request.options) if path.is_file() else None


def _acquire(source: str, request: Request) -> dict:
    check(source)
    path = Path(source).expanduser()
    out = request.sources_dir / identity(path, request.options)
    if done := completed(out):
        return done
    made = convert(path, fresh_dir(partial_dir(out)), request.options)
    if not made["splits"]:
        raise UserError(f"{path} gave no picture with a caption ({made['counts']['skipped']})")
    result = {"root": str(out), "identity": out.name, **made}
    return commit(partial_dir(out), out, result)


def _estimate(source: str, acquired: dict | None, request: Request) -> SourceEstimate:
    """The pictures written, or before that the usable pictures the table names (read once for
    its identity already)."""
    if acquired is not None:
        return SourceEstimate(capped(sum(acquired["counts"]["pictures"].values()), request.limit))
    path = Path(source).expanduser()
    if not path.is_file():
        return SourceEstimate(request.limit)
    return SourceEstimate(capped(len(_pictures(path, request.options)), request.limit))


KIND = SourceKind(
    name="table",
    label="a caption table",
    help="TABLE: a caption table (.parquet, .csv, .tsv, .jsonl), one row per caption",
    recognises=_is_table,
    cache_name=_cache_name,
    acquire=_acquire,
    check=check,
    estimate=_estimate,
    options=OPTIONS,
)
