"""What `colortrain colorize` accepts and where it writes, checked before any model runs.

Kept free of torch so that the CLI can show these defaults without importing it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from colorfeat.errors import UserError
from colorfeat.pictures import MAX_PICTURE_PIXELS

DEFAULT_BATCH_SIZE = 8
# The pixels of one batch's pictures together: one picture at the largest size is a batch alone.
MAX_BATCH_PIXELS = MAX_PICTURE_PIXELS
DEFAULT_SUFFIX = ".colorized.png"  # without --out/--out-dir: next to the input
ATTENTION_SUFFIX = ".attention.png"
OUTPUT_FORMATS = {  # extension -> Pillow format of the pictures colorize writes
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
}


def output_format(path: Path) -> str:
    """The Pillow format a picture is written in, from its extension; UserError if unknown."""
    ext = path.suffix.lower()
    if ext not in OUTPUT_FORMATS:
        known = ", ".join(OUTPUT_FORMATS)
        raise UserError(f"cannot write {path}: unknown extension {ext or '(none)'!r}; use {known}")
    return OUTPUT_FORMATS[ext]


def _targets(images: list[Path], out: Path | None, out_dir: Path | None) -> list[tuple[Path, Path]]:
    if out is not None and out_dir is not None:
        raise UserError("give one of --out FILE or --out-dir DIR, not both")
    if out is not None:
        if len(images) != 1:
            raise UserError(f"--out takes one image, got {len(images)}; use --out-dir")
        return [(out, out.with_name(out.stem + ATTENTION_SUFFIX))]
    if out_dir is not None:
        return [(out_dir / f"{p.stem}.png", out_dir / (p.stem + ATTENTION_SUFFIX)) for p in images]
    return [  # next to each input
        (p.with_name(p.stem + DEFAULT_SUFFIX), p.with_name(p.stem + ATTENTION_SUFFIX))
        for p in images
    ]


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """The resolved path, and the file's (device, inode) if it exists: hard links are one file."""
    try:
        st = os.stat(path)
        return str(path.resolve()), (st.st_dev, st.st_ino)
    except OSError:
        return str(path.resolve()), None


def output_paths(
    images: list[Path], out: Path | None, out_dir: Path | None, attention: bool = False
) -> list[tuple[Path, Path]]:
    """(colorized, attention) output paths for each input; checked before any work is done.

    Refused: an output that is one of the inputs (by path, link or hard link), and two outputs
    that are one file (the attention pictures too when `attention`).
    """
    pairs = _targets(images, out, out_dir)
    outputs = [p for pair in pairs for p in (pair if attention else pair[:1])]
    for dst in outputs:
        output_format(dst)
    inputs: dict[object, Path] = {}
    for p in images:
        path_id, file_id = _identity(p)
        inputs[path_id] = p
        if file_id is not None:
            inputs[file_id] = p
    seen: dict[str, Path] = {}
    for dst in outputs:
        path_id, file_id = _identity(dst)
        src = inputs.get(path_id) or (inputs.get(file_id) if file_id is not None else None)
        if src is not None:
            raise UserError(f"{dst} would overwrite the input {src}; choose another --out or "
                            "--out-dir")  # fmt: skip
        if path_id in seen:
            raise UserError(f"two outputs would be {dst} (one would be lost); colorize those "
                            "pictures into separate dirs or rename one")  # fmt: skip
        seen[path_id] = dst
    return pairs


def batches(sizes: list[tuple[int, int]], batch_size: int) -> Iterator[list[int]]:
    """Indices of the pictures of (height, width) `sizes`, in order, grouped into batches of at
    most `batch_size` pictures and MAX_BATCH_PIXELS pixels (a larger picture goes alone)."""
    batch: list[int] = []
    pixels = 0
    for i, (h, w) in enumerate(sizes):
        if batch and (len(batch) == batch_size or pixels + h * w > MAX_BATCH_PIXELS):
            yield batch
            batch, pixels = [], 0
        batch.append(i)
        pixels += h * w
    if batch:
        yield batch
