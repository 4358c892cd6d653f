"""What `colortrain colorize` accepts and where it writes, checked before any model runs.

Kept free of torch so that the CLI can show these defaults without importing it.
"""

from __future__ import annotations

from pathlib import Path

from colorfeat.errors import UserError

MAX_PIXELS = 100_000_000  # width x height of the largest picture colorize accepts
DEFAULT_BATCH_SIZE = 8
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


def output_paths(
    images: list[Path], out: Path | None, out_dir: Path | None
) -> list[tuple[Path, Path]]:
    """(colorized, attention) output paths for each input; checked before any work is done."""
    if out is not None and out_dir is not None:
        raise UserError("give one of --out FILE or --out-dir DIR, not both")
    if out is not None:
        if len(images) != 1:
            raise UserError(f"--out takes one image, got {len(images)}; use --out-dir")
        pairs = [(out, out.with_name(out.stem + ATTENTION_SUFFIX))]
    elif out_dir is not None:
        pairs = [(out_dir / f"{p.stem}.png", out_dir / (p.stem + ATTENTION_SUFFIX)) for p in images]
    else:  # next to each input
        pairs = [
            (p.with_name(p.stem + DEFAULT_SUFFIX), p.with_name(p.stem + ATTENTION_SUFFIX))
            for p in images
        ]
    targets = [dst for dst, _ in pairs]
    if len(set(targets)) != len(targets):
        raise UserError("two input images share a file name; colorize them into separate dirs")
    inputs = {p.resolve() for p in images}
    for dst in targets:
        output_format(dst)
        if dst.resolve() in inputs:
            raise UserError(f"{dst} is an input picture; choose another --out or --out-dir")
    return pairs
