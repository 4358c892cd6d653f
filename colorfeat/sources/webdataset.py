"""The `webdataset` source kind: tar shards as img2dataset writes them, local, http(s) or S3.

`--source DIR` (a directory of `*.tar` shards), `--source 'data/{00000..00099}.tar'`,
`--source 'https://host/cc3m/{00000..00331}.tar'` or `--source 's3://bucket/cc/{00000..00009}.tar'`
(brace patterns expand as WebDataset's do, with the `braceexpand` package it uses; see
`colorfeat.sources.shards` for why the webdataset package itself is not); `--source
s3://bucket/cc/` (a prefix, with its `/`: the `*.tar` objects directly under it). Each shard
is read as a stream, front to back, without unpacking the tar to disk (`colorfeat.sources.shards`;
over http by `streaming`, from an object store through fsspec by `objects`, with the store
roots' credentials from the environment), into WORK/sources/shards/<shard id>: its pictures
under names made there, and a marker with its samples and skip counts. A shard is the unit of
identity: a local one is named by its file name, size and modification time, a remote one by its
redacted URL and what the server says of its version (http: ETag, Last-Modified, length; S3: the
object's ETag and size), so when new shards arrive a rebuild reads only those.

The source itself is WORK/sources/wds-<hash of its shard ids> in the COCO layout
(`colorfeat.sources.layout`, pictures hard-linked from the shards' folders). Shards carry no
split: `--val-fraction` of the pictures (one in five by default) go to val, chosen by a hash of
their key, the rest to train; a fraction other than the default enters the hash of the name, and
the shards read before are reused as they are.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from colorfeat.errors import UserError
from colorfeat.hashing import value_hash
from colorfeat.parallel import commit, completed, partial_dir
from colorfeat.redact import redact_text, redact_url, reveal
from colorfeat.sources.directory import IDENTITY_RULE
from colorfeat.sources.files import open_bounded
from colorfeat.sources.kind import Request, SourceEstimate, SourceKind, capped
from colorfeat.sources.layout import LayoutWriter, fresh_dir, hashed_split

HTTP = ("http://", "https://")
OBJECT_STORES = ("s3://",)  # read through fsspec (`colorfeat.sources.objects`)
SCHEMES = HTTP + OBJECT_STORES
MAX_SHARDS = 100_000
MAX_SHARD_BYTES = 64 << 30  # read as a stream: this bounds the time, not the memory
MAX_STATS_BYTES = 64 << 10  # an img2dataset `_stats.json`; a few hundred bytes
MAX_ESTIMATED_SHARDS = 10_000  # the dry run reads remote `_stats.json` files up to this many
OPTIONS = ("val_fraction",)  # the `SourceOptions` this kind reads


def _is_url(source: str) -> bool:
    return source.startswith(SCHEMES)


def _in_object_store(source: str) -> bool:
    return source.startswith(OBJECT_STORES)


def _is_prefix(source: str) -> bool:
    """An object-store URL ending in `/` (as a directory): the `*.tar` objects under that prefix."""
    return _in_object_store(source) and "{" not in source and source.endswith("/")


def recognises(source: str) -> bool:
    """A URL or pattern of `.tar` files, or a directory holding `*.tar` and nothing COCO-like."""
    from braceexpand import UnbalancedBracesError, braceexpand

    if "://" in source and not _is_url(source):
        return False
    try:
        first = next(iter(braceexpand(source)), "")
    except UnbalancedBracesError:
        first = source
    if urlsplit(first).path.endswith(".tar") or _is_prefix(source):
        return True
    path = Path(source).expanduser()
    if _is_url(source) or not path.is_dir():
        return False
    return not (path / "annotations").is_dir() and any(path.glob("*.tar"))


def shard_list(source: str) -> list[str]:
    """The shards a source names, in order: expanded patterns, or a directory's `*.tar`."""
    from braceexpand import UnbalancedBracesError, braceexpand

    path = Path(source).expanduser()
    if not _is_url(source) and path.is_dir():
        return [str(p) for p in sorted(path.glob("*.tar"))]
    if _is_prefix(source):
        from colorfeat.sources.objects import listing

        return _at_most(source, listing(reveal(source), ".tar"))
    shards = []
    # A URL's credentials were concealed for the records (`colorfeat.redact`): the requests need
    # them back; every id, marker and message redacts them again.
    try:
        for shard in braceexpand(reveal(source) if _is_url(source) else str(path)):
            shards.append(shard)
            if len(shards) > MAX_SHARDS:
                raise UserError(f"--source {redact_text(source)} names over {MAX_SHARDS} shards")
    except UnbalancedBracesError:
        raise UserError(f"--source {redact_text(source)}: unbalanced braces") from None
    return shards


def _at_most(source: str, shards: list[str]) -> list[str]:
    if len(shards) > MAX_SHARDS:
        raise UserError(f"--source {redact_text(source)} names over {MAX_SHARDS} shards")
    return shards


def check(source: str) -> None:
    """Local shards exist as regular files (remote ones are asked for when the run reads them),
    and a prefix in an object store holds some."""
    shards = shard_list(source)
    if not shards:
        raise UserError(f"--source {redact_text(source)}: no *.tar shards under it")
    for shard in shards:
        if not _is_url(shard) and not Path(shard).is_file():
            raise UserError(f"--source {redact_text(source)}: no shard file {shard}")


def _local_id(shard: str) -> str:
    info = os.stat(shard)
    return "tar-" + value_hash(
        [IDENTITY_RULE, Path(shard).name, info.st_size, info.st_mtime_ns], 16
    )


def _remote_id(url: str) -> str:
    from colorfeat.sources import objects, streaming

    version = (objects if _in_object_store(url) else streaming).version(url)
    return "url-" + value_hash([redact_url(url), version], 16)


@contextmanager
def _opened(shard: str) -> Iterator[BinaryIO]:
    """A shard's bytes as a stream: a regular local file, or a remote body as it arrives."""
    if _in_object_store(shard):
        from colorfeat.sources.objects import stream as stream_object

        with stream_object(shard, limit=MAX_SHARD_BYTES) as body:
            yield body
        return
    if _is_url(shard):
        from colorfeat.sources.streaming import stream

        with stream(shard) as body:
            yield body
        return
    path = Path(shard)
    with open_bounded(path.parent, path, what="shard", limit=MAX_SHARD_BYTES) as file:
        yield file


def _read(shard: str, shards_dir: Path) -> tuple[str, dict]:
    """(the shard's id, its marker), reading the shard unless an earlier run did."""
    from colorfeat.sources.shards import read_shard

    shard_id = _remote_id(shard) if _is_url(shard) else _local_id(shard)
    out = shards_dir / shard_id
    if done := completed(out):
        return shard_id, done
    partial = fresh_dir(partial_dir(out))
    with _opened(shard) as file:
        result = read_shard(file, partial)
    return shard_id, commit(partial, out, {"shard": redact_url(shard), **result})


def _assemble(
    read: list[tuple[str, dict]], shards_dir: Path, out: Path, val_fraction: float
) -> dict:
    """The shards' samples in the COCO layout under `out`."""
    writer = LayoutWriter(out)
    skipped: Counter[str] = Counter()
    for shard_id, marker in read:
        skipped.update(marker["skipped"])
        for sample in marker["samples"]:
            picture = shards_dir / shard_id / sample["file"]
            image_id = sum(len(v) for v in writer.images.values()) + 1
            split = hashed_split(sample["key"], val_fraction)
            writer.add(split, sample["file"], picture, [sample["caption"]], image_id)
    writer.skipped.update(skipped)
    return writer.finish()


def _name(shard_ids: list[str], request: Request) -> str:
    """wds-<hash of the shard ids, and of the options given (none: the name it always had)>."""
    given = request.options.given(OPTIONS)
    return "wds-" + value_hash({"shards": shard_ids, **given} if given else shard_ids, 16)


def _cache_name(source: str, request: Request) -> str | None:
    if _is_url(source) or any(_is_url(s) for s in shard_list(source)):
        return None  # not known without asking the server: a dry run stays offline
    return _name([_local_id(s) for s in shard_list(source)], request)


def _acquire(source: str, request: Request) -> dict:
    check(source)
    shards_dir = request.sources_dir / "shards"
    read = [_read(shard, shards_dir) for shard in shard_list(source)]
    out = request.sources_dir / _name([shard_id for shard_id, _ in read], request)
    if done := completed(out):
        return done
    partial = fresh_dir(partial_dir(out))
    made = _assemble(read, shards_dir, partial, request.options.val_fraction)
    if not made["splits"]:
        raise UserError(f"--source {redact_text(source)} gave no picture with a caption "
                        f"({made['counts']['skipped']})")  # fmt: skip
    return commit(partial, out, {"root": str(out), "identity": out.name, **made})


def _stats_name(shard: str) -> str:
    """Where img2dataset writes a shard's statistics: `<shard stem>_stats.json` beside it."""
    return posixpath.splitext(shard)[0] + "_stats.json"


def _successes(text: bytes | str | None) -> int | None:
    """The `successes` of an img2dataset `_stats.json`, or None."""
    try:
        return int(json.loads(text)["successes"])  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError):
        return None


def _stats_pictures(shard: str) -> int | None:
    """The `successes` img2dataset wrote in `<shard>_stats.json` beside a local shard."""
    try:
        return _successes(Path(_stats_name(shard)).read_text())
    except OSError:
        return None


def _object_estimate(shards: list[str], limit: int | None) -> SourceEstimate:
    """Shards in an object store: their sizes and `_stats.json` from a listing of each prefix."""
    from colorfeat.sources import objects

    stats = {_stats_name(s): s for s in shards}
    try:
        found = objects.sizes([*shards, *stats])
        small = [name for name in stats if found.get(name, MAX_STATS_BYTES + 1) <= MAX_STATS_BYTES]
        read = objects.read_small(small)
    except UserError:  # unreachable now: the run itself says why
        return SourceEstimate(limit, download_bytes=None)
    download = sum(found[s] for s in shards) if all(s in found for s in shards) else None
    counts = [_successes(read.get(name)) for name in stats]
    known = None if None in counts else sum(c or 0 for c in counts)
    return SourceEstimate(capped(known, limit), download_bytes=download)


def _estimate(source: str, acquired: dict | None, request: Request) -> SourceEstimate:
    if acquired is not None:
        return SourceEstimate(capped(sum(acquired["counts"]["pictures"].values()), request.limit))
    shards = shard_list(source)
    if all(_in_object_store(s) for s in shards) and len(shards) <= MAX_ESTIMATED_SHARDS:
        return _object_estimate(shards, request.limit)
    if any(_is_url(s) for s in shards):
        return SourceEstimate(request.limit, download_bytes=None)
    counts = [_stats_pictures(s) for s in shards]
    known = None if None in counts else sum(c or 0 for c in counts)
    return SourceEstimate(capped(known, request.limit))


KIND = SourceKind(
    name="webdataset",
    label="WebDataset shards",
    help="SHARDS: WebDataset tar shards, a directory or a brace pattern, local, http(s) or s3",
    recognises=recognises,
    cache_name=_cache_name,
    acquire=_acquire,
    check=check,
    estimate=_estimate,
    options=OPTIONS,
)
