"""The `directory` source kind: `--source DIR`, a data set already in the COCO layout.

DIR/annotations/captions_<split>.json with pictures under DIR/<split>/<file_name>
(`colorfeat.sources.coco`). It is read where it is, never copied; its identity hashes each
caption file and the listing of each split's pictures (`IDENTITY_RULE`), so editing, adding or
removing a picture or a caption gives a new identity, and nothing else does.
"""

from __future__ import annotations

import os
from pathlib import Path

from colorfeat.errors import UserError
from colorfeat.hashing import value_hash
from colorfeat.redact import redact_text
from colorfeat.sources.coco import annotations_path, find_splits
from colorfeat.sources.files import sha256_bounded
from colorfeat.sources.kind import Request, SourceEstimate, SourceKind, capped, count_pictures

# How a directory source's pictures enter its identity; a new rule gives every such source a new
# identity, hence new stage keys and version ids.
IDENTITY_RULE = "path-size-mtime_ns"


def _looks_like_a_path(source: str) -> bool:
    """A value meant as a directory: one that exists, or is written as a path (`./x`, `~/x`,
    `a/b`); a bare word that is neither is a mistyped name (`synthetc`)."""
    if "://" in source:
        return False
    return os.sep in source or source.startswith((".", "~")) or Path(source).exists()


def check(source: str) -> None:
    """One UserError unless `source` is a directory in the COCO layout with sound caption files."""
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"--source {redact_text(source)}: no such directory")
    if not path.is_dir():
        raise UserError(f"--source {redact_text(source)} is not a directory")
    find_splits(path)


def _acquire(source: str, request: Request) -> dict:
    check(source)
    return acquire_dir(Path(source).expanduser())


def _ready(source: str, request: Request) -> dict | None:
    path = Path(source).expanduser()
    return acquire_dir(path) if path.is_dir() else None


def _estimate(source: str, acquired: dict | None, request: Request) -> SourceEstimate:
    pictures = count_pictures(acquired) if acquired is not None else None
    return SourceEstimate(capped(pictures, request.limit))


def acquire_dir(path: Path) -> dict:
    """A COCO-layout directory as it is; identity from caption files and the picture listing.

    The listing holds every file under each split's directory with its size and modification
    time in nanoseconds (what make and rsync trust), so a picture edited in place changes the
    identity even at the same size; copying the directory with its times (`cp -a`, `rsync -a`)
    keeps it.
    """
    path = path.resolve()
    splits = find_splits(path)
    ident: dict = {"rule": IDENTITY_RULE}
    for name in sorted(splits):
        image_dir = path / name
        files = listing(image_dir) if image_dir.is_dir() else []
        captions = annotations_path(path, name)
        ident[name] = {
            "captions": sha256_bounded(path, captions, what="annotations file"),
            "images": value_hash(files),
        }
    return {"root": str(path), "splits": splits, "identity": "dir-" + value_hash(ident, 16)}


def listing(image_dir: Path, root: Path | None = None) -> list[tuple[str, int | None, int | None]]:
    """(path under image_dir, size, mtime_ns) of every file below it, sorted; links are followed
    (a broken one is (path, None, None)), but never to a directory outside the source root
    (default: image_dir's parent) or to one already listed. A directory that cannot be listed
    raises: it must not silently leave the identity."""
    root = os.path.realpath(image_dir.parent if root is None else root)
    prefix = len(str(image_dir)) + 1
    seen: set[str] = set()
    out: list[tuple[str, int | None, int | None]] = []
    pending = [str(image_dir)]
    while pending:
        directory = pending.pop()
        real = os.path.realpath(directory)
        if real in seen or os.path.commonpath([root, real]) != root:
            continue
        seen.add(real)
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir():
                    pending.append(entry.path)
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # a broken link
                    out.append((entry.path[prefix:], None, None))
                    continue
                out.append((entry.path[prefix:], st.st_size, st.st_mtime_ns))
    return sorted(out)


KIND = SourceKind(
    name="directory",
    label="a COCO-layout directory",
    help="DIR: a directory in the COCO layout",
    recognises=_looks_like_a_path,
    acquire=_acquire,
    ready=_ready,
    check=check,
    estimate=_estimate,
)
