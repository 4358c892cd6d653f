"""Reading a file over http(s) as a stream: remote tar shards, read front to back as they arrive.

`head(url)` gives what a server says of a file's version (its headers), `version(url)` the part
of them that names the version (ETag, Last-Modified, length); `stream(url)` opens its body as
a read-only file object for `tarfile`'s stream mode, so a shard is never stored whole. Shards in
an object store (`s3://`) are read the same way by `colorfeat.sources.objects`. Failures are
classified as in `colorfeat.sources.download`: a transient one is a NetworkError (the flow
retries the stage; the shards already read are kept), a permanent one a UserError.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from colorfeat.sources.download import TIMEOUT, check_url, http_error, status_error


def head(url: str) -> dict[str, str]:
    """The headers of a HEAD request for url, names in lower case."""
    check_url(url)
    try:
        r = httpx.head(url, timeout=TIMEOUT, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise http_error(url, exc) from None
    if r.status_code in (405, 501):  # HEAD not allowed: nothing said of the version
        return {}
    if r.status_code != 200:
        raise status_error(url, r.status_code, "cannot reach")
    return {name.lower(): value for name, value in r.headers.items()}


def version(url: str) -> list[str | None]:
    """What the server says of url's version: its ETag, Last-Modified and length (None: unsaid)."""
    headers = head(url)
    return [headers.get(k) for k in ("etag", "last-modified", "content-length")]


class Blocks(io.RawIOBase):
    """Blocks of bytes as they arrive (a response body, an object's ranges) as a file that reads
    forward only."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._left:
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._left = block
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


@contextmanager
def stream(url: str) -> Iterator[io.BufferedReader]:
    """url's body as a file object, read as it arrives."""
    check_url(url)
    try:
        with httpx.stream("GET", url, timeout=TIMEOUT, follow_redirects=True) as r:
            if r.status_code != 200:
                raise status_error(url, r.status_code)
            yield io.BufferedReader(Blocks(r.iter_bytes()), buffer_size=1 << 20)
    except httpx.HTTPError as exc:
        raise http_error(url, exc) from None
