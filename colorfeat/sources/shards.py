"""Reading one WebDataset tar shard as a stream: its samples' pictures and captions, and counts.

A shard as img2dataset writes it holds, for each sample key, `<key>.jpg` (or .jpeg, .png, .webp),
`<key>.txt` (the caption) and `<key>.json` (url, caption, size...). `read_shard` reads the tar
front to back from any stream (a file or an HTTP response), never seeking and never extracting
a member by its own name: a picture goes to OUT/<n>.<ext> under a name made here, a caption is
kept in memory. The webdataset package is not used for this: its tar iterator reads every
member whole before anything can check its size, skips links and devices without a count, and
ends the shard with an exception where a truncated tar should keep what was read; its URL
opener runs `curl`; and importing it imports PyTorch (about 7 s on a busy 2-core machine, in the
acquire stage and every dry run). Keys split as its `tariterators.base_plus_ext` splits them
(`KEY`: everything up to the first dot of the last path part), so a shard reads the same here.

Skipped, and counted by reason: a member with an absolute name or a `..` part, a link, device
or FIFO, a member over its size limit, a caption that is not UTF-8, a key with a picture and no
caption (or the reverse), a key given twice. A shard that stops half-way keeps every complete
sample read before the cut and counts `truncated or damaged shard`.
"""

from __future__ import annotations

import re
import tarfile
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from colorfeat.constants import MAX_PICTURE_BYTES

PICTURE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSION = "txt"
MAX_CAPTION_BYTES = 64 << 10  # a caption; COCO's longest is a few hundred bytes
KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset.tariterators.base_plus_ext's


def _base_plus_ext(name: str) -> tuple[str | None, str | None]:
    """("dir/key", "ext.ext2") of a member name, or (None, None) when it has no extension."""
    match = KEY.match(name)
    return (match.group(1), match.group(2)) if match else (None, None)


def _refused(member: tarfile.TarInfo) -> str | None:
    """Why a member is not read at all, or None."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith("/") or ".." in parts:
        return "unsafe member name"
    if member.isdir():
        return None
    if not member.isreg():
        return "link or device member"
    return None


class _Samples:
    """Pictures and captions of one shard, by key, as they are read."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.pictures: dict[str, str] = {}  # key -> file name under out
        self.captions: dict[str, str] = {}
        self.skipped: Counter[str] = Counter()

    def take(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        key, ext = _base_plus_ext(member.name)
        ext = (ext or "").lower()
        if key is None or not (ext in PICTURE_EXTENSIONS or ext == CAPTION_EXTENSION):
            return  # .json, .parquet and other members: metadata this store does not use
        limit = MAX_CAPTION_BYTES if ext == CAPTION_EXTENSION else MAX_PICTURE_BYTES
        if member.size > limit:
            self.skipped["member too large"] += 1
            return
        taken = self.captions if ext == CAPTION_EXTENSION else self.pictures
        if key in taken:
            self.skipped["key given twice"] += 1
            return
        data = tar.extractfile(member).read()  # type: ignore[union-attr]
        if ext == CAPTION_EXTENSION:
            try:
                self.captions[key] = data.decode("utf-8").strip()
            except UnicodeDecodeError:
                self.skipped["caption not UTF-8"] += 1
            return
        name = f"{len(self.pictures) + 1:08d}.{ext}"
        (self.out / name).write_bytes(data)
        self.pictures[key] = name

    def result(self) -> dict:
        """{"samples": [{"key", "file", "caption"}], "skipped": {reason: n}} in shard order."""
        for key in self.pictures.keys() - self.captions.keys():
            (self.out / self.pictures.pop(key)).unlink()
            self.skipped["picture without caption"] += 1
        self.skipped["caption without picture"] += len(self.captions.keys() - self.pictures.keys())
        samples = [
            {"key": key, "file": file, "caption": self.captions[key]}
            for key, file in self.pictures.items()
        ]
        return {"samples": samples, "skipped": {k: v for k, v in sorted(self.skipped.items()) if v}}


def read_shard(stream: BinaryIO, out: Path) -> dict:
    """Read a tar shard from `stream`; pictures into `out` -> `_Samples.result()`."""
    out.mkdir(parents=True, exist_ok=True)
    samples = _Samples(out)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                why = _refused(member)
                if why:
                    samples.skipped[why] += 1
                elif member.isreg():
                    samples.take(tar, member)
    except (tarfile.TarError, EOFError):  # cut short, or damaged past this point
        samples.skipped["truncated or damaged shard"] += 1
    return samples.result()
