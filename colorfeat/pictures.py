"""The one picture reader: every picture this project decodes (a source's, colorize's, the app's).

One set of rules for all of them:

- the file is a regular file (opened without blocking, so a FIFO never hangs a reader) of at most
  MAX_PICTURE_BYTES;
- its format is one of PICTURE_FORMATS: no other Pillow plugin ever parses a byte of it;
- width x height, read from the header before any pixel is decoded, is at most MAX_PICTURE_PIXELS;
- EXIF orientation is applied, transparency is composed over white (a transparent area has no
  colour), 16-bit levels are scaled to 8 bits (not clipped), and every mode becomes uint8 RGB
  (H, W, 3); a gray picture is its one channel repeated three times (see `is_gray`).

A problem of the picture itself raises PictureError, whose `reason` is a short phrase ("too
large", "not an image", "truncated", ...); a fault of the environment (an I/O error, a
permission, memory) raises as it is, so that callers never record it as a bad picture.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from colorfeat import constants
from colorfeat.errors import UserError

# The formats a picture may have, as Pillow names them.
PICTURE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
# Read at call time (not bound at import), so one place sets them for every reader.
MAX_PICTURE_PIXELS = constants.MAX_PICTURE_PIXELS
MAX_PICTURE_BYTES = constants.MAX_PICTURE_BYTES
# Errors opening a picture that are the picture's own problem, and the reason given for each.
_DATA_ERRNOS = {
    errno.ENOENT: "missing file",
    errno.ENOTDIR: "missing file",
    errno.EISDIR: "not a file",
    errno.ELOOP: "symlink loop",
    errno.ENAMETOOLONG: "bad file name",
}
_SIXTEEN_BIT = 65535.0 / 255.0  # a 16-bit level per 8-bit level
_BAND_PIXELS = 1 << 20  # pixels per band copied out of a decoded picture


class PictureError(Exception):
    """A problem of the picture itself; `reason` says which, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextmanager
def _opened(path: str | Path) -> Iterator[BinaryIO]:
    """The picture file open for reading, once it is known to be a regular file of a fit size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _DATA_ERRNOS:
            raise PictureError(_DATA_ERRNOS[exc.errno]) from exc
        raise  # EIO, EACCES, EMFILE, ...: not the picture's fault
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PictureError("not a file")
        if st.st_size > MAX_PICTURE_BYTES:
            raise PictureError("too large")
        f = open(fd, "rb", closefd=False)  # noqa: SIM115 (closed below, with the descriptor)
        with f:
            yield f
    finally:
        os.close(fd)


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a picture file (a regular file of at most MAX_PICTURE_BYTES)."""
    with _opened(path) as f:
        data = f.read(MAX_PICTURE_BYTES + 1)
    if len(data) > MAX_PICTURE_BYTES:  # it grew while being read
        raise PictureError("too large")
    return data


@contextmanager
def _image(fp: BinaryIO) -> Iterator[Image.Image]:
    """The picture opened by Pillow from its header alone, its size checked; PictureError else."""
    try:
        # Pillow's own bomb warning (its limit is above ours) means "too large" too; as an error
        # it stops Pillow before it goes further.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fp, formats=PICTURE_FORMATS)
    except UnidentifiedImageError as exc:
        raise PictureError("not an image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PictureError("too large") from exc
    except Exception as exc:
        raise _picture_error(exc) from exc
    with im:
        if im.width * im.height > MAX_PICTURE_PIXELS:
            raise PictureError("too large")
        yield im


def _picture_error(exc: Exception) -> Exception:
    """What a decoding error means: the environment's fault as it is, or a PictureError."""
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno is not None):
        return exc
    msg = (str(exc).split("\n") or [""])[0]
    return PictureError("truncated" if "truncated" in msg.lower() else f"corrupt: {msg}")


def header_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of a picture file from its header, without decoding its pixels."""
    with _opened(path) as f, _image(f) as im:
        return im.height, im.width


def decode_rgb(data: bytes) -> np.ndarray:
    """A picture file's bytes -> uint8 RGB (H, W, 3), by the rules in this module's docstring."""
    with _image(io.BytesIO(data)) as im:
        try:
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # no copy of a picture the right way up
            rgb = to_rgb(im)
        except PictureError:
            raise
        except Exception as exc:  # Pillow raises many types for broken data
            raise _picture_error(exc) from exc
    if rgb.size == 0:
        raise PictureError("empty")
    return rgb


def to_rgb(im: Image.Image) -> np.ndarray:
    """A decoded picture of any mode -> uint8 RGB (H, W, 3)."""
    if im.mode == "I" or im.mode.startswith("I;16"):  # 16-bit gray (PNG, TIFF)
        levels = np.asarray(im).astype(np.float32) / _SIXTEEN_BIT  # (H, W)
        gray = np.clip(np.rint(levels), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)  # (H, W, 3)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return _rows_to_array(im if im.mode == "RGB" else im.convert("RGB"))


def _rows_to_array(im: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3) of an RGB picture, copied out a band of rows at a time: `np.asarray` of the
    whole picture would hold two more full copies at once (its bytes, joined from chunks)."""
    width, height = im.size
    out = np.empty((height, width, 3), np.uint8)
    step = max(1, _BAND_PIXELS // max(width, 1))
    for top in range(0, height, step):
        band = im.crop((0, top, width, min(height, top + step)))
        out[top : top + band.height] = np.asarray(band)
    return out


def is_gray(rgb: np.ndarray) -> bool:
    """Whether an RGB picture (H, W, 3) holds no colour: its three channels are equal."""
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def read_rgb(path: str | Path) -> np.ndarray:
    """A picture file -> uint8 RGB (H, W, 3); PictureError for the picture's own problems."""
    return decode_rgb(read_bytes(path))


# --------------------------------------------------------------------------- for commands


def user_message(path: str | Path, reason: str) -> str:
    """The one line a command prints for a picture it cannot use."""
    if reason == "missing file":
        return f"no such image: {path}"
    if reason == "too large":
        return (
            f"{path} is too large: over {MAX_PICTURE_PIXELS / 1e6:.0f} megapixels or "
            f"{MAX_PICTURE_BYTES >> 20} MiB (shrink it first)"
        )
    if reason == "not an image":
        reason += f" of a format read here ({', '.join(PICTURE_FORMATS)})"
    return f"cannot read image {path}: {reason}"


def check_picture(path: str | Path) -> tuple[int, int]:
    """(height, width) from a picture's header, or one UserError line saying what is wrong."""
    try:
        return header_size(path)
    except PictureError as exc:
        raise UserError(user_message(path, exc.reason)) from exc


def load_picture(path: str | Path) -> np.ndarray:
    """A picture file -> uint8 RGB (H, W, 3), or one UserError line saying what is wrong."""
    try:
        return read_rgb(path)
    except PictureError as exc:
        raise UserError(user_message(path, exc.reason)) from exc
