"""Opening a file that came with a source (annotations, split files, caption tables) safely.

A source's files are hostile input, held to the rules its pictures follow
(`colorfeat.sources.coco.picture_path`, `colorfeat.stages.images`): a file must be a regular
file (never a FIFO, a device or a directory), it must really lie inside the source's root (a link
is followed, and must end inside the root), and it must be under a size limit, checked on the
open file before a byte is read. Each breach is one UserError naming the file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from colorfeat.disk import human_bytes
from colorfeat.errors import UserError

# A captions or split file is parsed whole into Python objects, which take several times its
# size in memory. The largest file the project knows, COCO's captions_train2017.json, is 91 MB.
MAX_ANNOTATION_BYTES = 512 << 20


def inside(root: str | Path, path: str | Path) -> bool:
    """Whether `path`, followed through its links, ends inside `root` (also followed)."""
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


@contextmanager
def open_bounded(
    root: str | Path, path: str | Path, *, what: str, limit: int = MAX_ANNOTATION_BYTES
) -> Iterator[BinaryIO]:
    """`path` opened for reading once it is known to be a regular file inside `root` of at most
    `limit` bytes; otherwise one UserError naming it (`what` says what the file is)."""
    if not inside(root, path):
        raise UserError(f"{what} {path} is a link to outside the source {root}; refusing it")
    try:
        # O_NONBLOCK: a FIFO opens at once instead of waiting for a writer, so fstat can see it
        fd = os.open(os.path.realpath(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{what} {path} is not a regular file; refusing it")
        if info.st_size > limit:
            raise UserError(
                f"{what} {path} holds {human_bytes(info.st_size)}, over the limit of "
                f"{human_bytes(limit)}; refusing it"
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file:
        yield file


def read_bounded(
    root: str | Path, path: str | Path, *, what: str, limit: int = MAX_ANNOTATION_BYTES
) -> bytes:
    """The bytes of a source's file, under the rules of `open_bounded`."""
    with open_bounded(root, path, what=what, limit=limit) as file:
        data = file.read(limit + 1)
    if len(data) > limit:  # it grew after it was opened
        raise UserError(f"{what} {path} is over the limit of {human_bytes(limit)}; refusing it")
    return data


def sha256_bounded(
    root: str | Path, path: str | Path, *, what: str, limit: int = MAX_ANNOTATION_BYTES
) -> str:
    """The SHA-256 of a source's file, under the rules of `open_bounded`."""
    with open_bounded(root, path, what=what, limit=limit) as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
