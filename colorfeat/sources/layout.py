"""Writing pictures and captions from any source into the COCO layout, for the stages to read.

The captions and images stages read a COCO-layout directory (`colorfeat.sources.coco`): a kind of
source that is not in that layout (a Karpathy split file, a caption table, tar shards) is written
into one under WORK/sources by a `LayoutWriter`:

    ROOT/annotations/captions_<split>.json   COCO captions files, ids from 1 in the order added
    ROOT/<split>/<n><ext>                    the pictures, under names made here

A picture given as a file is hard-linked where the file system allows (no copy, no extra disk)
and copied otherwise; one given as bytes is written. Names are made here, never taken from the
source, so no name a source holds can reach outside ROOT. What was skipped, and why, is counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from fractions import Fraction
from pathlib import Path

from colorfeat.constants import MAX_PICTURE_BYTES
from colorfeat.sources.kind import VAL_FRACTION

# Extensions kept from a source's picture name (the images stage reads the bytes, not the name).
_EXT = re.compile(r"\.(jpe?g|png|webp|bmp|gif|tiff?)$", re.IGNORECASE)
SPLITS = ("train", "val", "test")  # store splits a converted source may have


def hashed_split(name: str, val_fraction: float = VAL_FRACTION) -> str:
    """`val` for a share `val_fraction` of picture names, chosen by a hash of the name, else
    `train`: the split of a picture from a source that names none (a name always goes one way).

    The fraction is taken as p/q in lowest terms (q at most a million): a name is val when the
    hash modulo q is below p, so the default 1/5 holds out the names whose hash is 0 modulo 5.
    """
    p, q = Fraction(val_fraction).limit_denominator(10**6).as_integer_ratio()
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()
    return "val" if int.from_bytes(digest[:8], "big") % q < p else "train"


def store_split(name: str, restval: str = "train") -> str | None:
    """A source's split name as a store split: train*, val*, test*, and `restval` -> `restval`."""
    name = name.strip().lower()
    if name == "restval":
        return restval
    return next((split for split in SPLITS if name.startswith(split)), None)


class LayoutWriter:
    """Collects pictures with their captions, then writes the COCO-layout files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.images: dict[str, list[dict]] = {}
        self.captions: dict[str, list[dict]] = {}
        self.skipped: Counter[str] = Counter()

    def skip(self, reason: str, n: int = 1) -> None:
        """Count something of the source left out, by reason."""
        if n:
            self.skipped[reason] += n

    def add(
        self, split: str, name: str, picture: Path | bytes, captions: list[str], image_id: int
    ) -> None:
        """One picture of `split` (a store split) with its captions; `name` gives the extension."""
        images = self.images.setdefault(split, [])
        match = _EXT.search(name)
        file_name = f"{len(images) + 1:09d}{match.group(0).lower() if match else '.img'}"
        target = self.root / split / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(picture, bytes):
            target.write_bytes(picture)
        else:
            _link_or_copy(picture, target)
        images.append({"id": image_id, "file_name": file_name})
        self.captions.setdefault(split, [])
        self.add_captions(split, image_id, captions)

    def add_captions(self, split: str, image_id: int, captions: list[str]) -> None:
        """More captions of a picture already added."""
        anns = self.captions[split]
        for text in captions:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "caption": text})

    def finish(self) -> dict:
        """Write the captions files -> {"splits": {split: split}, "counts": {...}}."""
        (self.root / "annotations").mkdir(parents=True, exist_ok=True)
        for split, images in self.images.items():
            doc = {"images": images, "annotations": self.captions[split]}
            (self.root / "annotations" / f"captions_{split}.json").write_text(json.dumps(doc))
        counts = {
            "pictures": {split: len(images) for split, images in sorted(self.images.items())},
            "skipped": dict(sorted(self.skipped.items())),
        }
        return {"splits": {split: split for split in sorted(self.images)}, "counts": counts}


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target, follow_symlinks=True)
    except OSError:  # another file system, or a file this user may not link
        shutil.copyfile(source, target)


def regular_picture(root: str | Path, name: str) -> Path | str:
    """The real path of the picture `name` under `root`, or why it cannot be read: the picture
    rules of the images stage (inside the root, a regular file, at most MAX_PICTURE_BYTES)."""
    from colorfeat.sources.coco import picture_path

    path = picture_path(root, name)
    if path is None:
        return "outside source"
    try:
        info = path.stat()
    except OSError:
        return "missing picture"
    if not path.is_file():
        return "not a file"
    return "too large" if info.st_size > MAX_PICTURE_BYTES else path


def fresh_dir(path: Path) -> Path:
    """`path` emptied: a conversion killed half-way starts again (links cost nothing to redo)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
