"""Reading objects in an object store (`s3://bucket/key`) as a stream, through fsspec: tar shards.

`version(url)` is what the store says of an object's version without reading it (its ETag and
size); `stream(url, limit=...)` opens it as a read-only file object for `tarfile`'s stream mode,
fetched a range at a time as it is read (`BLOCK_BYTES`), so a shard is never stored whole;
`listing(url, suffix)` names the objects directly under a prefix; `sizes(urls)` and
`read_small(urls, limit)` serve the dry run. The file system is `colorfeat.filesystems`' (the
store roots' too): credentials and endpoint come from the environment (`AWS_*`, fsspec's config).

Listings are asked for again each time (fsspec keeps them in memory otherwise, and a scheduled
rebuild in a long-lived process must see new shards and changed ETags). Failures are one line,
classified as in `colorfeat.sources.download`: a missing object or bucket, a refusal, missing
credentials or a bad name is a UserError; anything else the client raises (no connection,
timeouts, throttling, server errors) a NetworkError, which the flow retries.
"""

from __future__ import annotations

import errno
import io
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager

import fsspec

from colorfeat.disk import human_bytes
from colorfeat.errors import UserError
from colorfeat.filesystems import filesystem
from colorfeat.redact import redact_text, redact_url
from colorfeat.sources.download import NetworkError
from colorfeat.sources.streaming import Blocks

BLOCK_BYTES = 8 << 20  # one ranged GET per block while a shard is read


def _client_errors() -> tuple[type[BaseException], ...]:
    """What an object store's client raises when a request fails (never a bug of ours)."""
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:  # another fsspec back end: OSError and ValueError are its failures
        return (OSError, ValueError)
    return (OSError, ValueError, BotoCoreError)


def object_error(url: str, exc: BaseException) -> UserError:
    """The one-line error for a failed request: NetworkError when it may pass, else UserError."""
    shown = f"cannot reach {redact_url(url)}"
    if isinstance(exc, FileNotFoundError):
        return UserError(f"{shown}: no such object")
    if isinstance(exc, PermissionError):
        return UserError(f"{shown}: access denied (check the AWS_* credentials in the environment)")
    if "Credentials" in type(exc).__name__:  # botocore's NoCredentialsError and its kin
        return UserError(f"{shown}: no usable credentials (AWS_ACCESS_KEY_ID... or AWS_PROFILE)")
    if isinstance(exc, ValueError) or getattr(exc, "errno", None) == errno.EINVAL:
        return UserError(f"{shown}: {type(exc).__name__}: {redact_text(str(exc))}")
    return NetworkError(f"{shown}: {type(exc).__name__}: {redact_text(str(exc))}")


@contextmanager
def _reaching(url: str) -> Iterator[None]:
    try:
        yield
    except UserError:
        raise
    except _client_errors() as exc:
        raise object_error(url, exc) from None


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = filesystem(url, what="object")
    fs.invalidate_cache(path)
    return fs, path


def version(url: str) -> list:
    """What the store says of url's version: its ETag and size (asked for, never read)."""
    with _reaching(url):
        fs, path = _fs(url)
        info = fs.info(path)
    if info.get("type") != "file":
        raise UserError(f"cannot reach {redact_url(url)}: not an object")
    return [info.get("ETag") or info.get("etag"), info.get("size")]


def _blocks(file: io.IOBase, url: str) -> Iterator[bytes]:
    with _reaching(url):
        while block := file.read(BLOCK_BYTES):
            yield block


@contextmanager
def stream(url: str, *, limit: int) -> Iterator[io.BufferedReader]:
    """url's bytes as a file object, read a range at a time; UserError when over `limit` bytes."""
    with _reaching(url):
        fs, path = _fs(url)
        size = int(fs.info(path)["size"])
        if size > limit:
            raise UserError(
                f"{redact_url(url)} holds {human_bytes(size)}, over the limit of "
                f"{human_bytes(limit)}; refusing it"
            )
        file = fs.open(path, "rb", block_size=BLOCK_BYTES, cache_type="none", size=size)
    try:
        yield io.BufferedReader(Blocks(_blocks(file, url)), buffer_size=BLOCK_BYTES)
    finally:
        file.close()


def _objects(prefix: str) -> dict[str, int]:
    """{url: size} of the objects directly under a prefix (none when nothing is there)."""
    with _reaching(prefix):
        fs, path = _fs(prefix)
        try:
            entries = fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
    return {fs.unstrip_protocol(e["name"]): int(e["size"]) for e in entries if e["type"] == "file"}


def listing(url: str, suffix: str) -> list[str]:
    """The URLs of the objects directly under the prefix url whose names end with suffix, sorted."""
    return sorted(name for name in _objects(url.rstrip("/")) if name.endswith(suffix))


def sizes(urls: list[str]) -> dict[str, int]:
    """{url: size} of those of urls that exist, one listing of each prefix they are under."""
    found: dict[str, int] = {}
    for prefix in sorted({posixpath.dirname(u) for u in urls}):
        found.update(_objects(prefix))
    return {u: found[u] for u in urls if u in found}


def read_small(urls: list[str]) -> dict[str, bytes]:
    """{url: bytes} of those of urls that can be read, fetched together (the dry run's side files;
    the caller knows their sizes)."""
    if not urls:
        return {}
    paths = {filesystem(u, what="object")[1]: u for u in urls}
    with _reaching(urls[0]):
        fs, _ = _fs(urls[0])
        got = fs.cat(list(paths), on_error="omit")
    return {paths[path]: data for path, data in got.items() if path in paths}
