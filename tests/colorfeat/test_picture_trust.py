"""Pictures are hostile input: names stay inside the source, size is checked from the header, and
a fault of the environment fails the images stage instead of being recorded as a bad picture."""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image, ImageFile

from colorfeat import pictures
from colorfeat.constants import MAX_PICTURE_PIXELS, PRIORS_DIR
from colorfeat.sources import acquire
from colorfeat.sources.coco import picture_path
from colorfeat.stages import images as images_mod
from colorfeat.stages.captions import captions_stage
from colorfeat.stages.images import decode_picture, images_stage, read_picture
from colorfeat.stages.vocab import vocab_stage

LEXICON = PRIORS_DIR / "color_words.txt"


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; its pixel data is one pixel's worth."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR CRC
    return bytes(data)


def _run_stages(src: dict, work: Path, **kw) -> dict:
    caps = captions_stage(src, LEXICON, work / "captions")
    voc = vocab_stage(caps, work / "vocab")
    return images_stage(src, caps, voc, work / "img", image_size=16, **kw)


def _reasons(res: dict) -> dict[str, str]:
    g = zarr.open_group(res["path"], mode="r")
    return {s["file"]: s["reason"] for s in g.attrs["skipped"]}


# --------------------------------------------------------------------------- names


def test_picture_path_stays_inside_the_root(tmp_path):
    root = tmp_path / "coco"
    (root / "val").mkdir(parents=True)
    (root / "val" / "a.jpg").write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (root / "val" / "out.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "val" / "in.jpg").symlink_to(root / "val" / "a.jpg")
    assert picture_path(root, "val/a.jpg") == (root / "val" / "a.jpg").resolve()
    assert picture_path(root, "val/in.jpg") == (root / "val" / "a.jpg").resolve()
    for name in ("val/../../secret.jpg", "val/../val/a.jpg", str(tmp_path / "secret.jpg"),
                 "val//etc/passwd", "val/out.jpg", "val/a\x00.jpg"):  # fmt: skip
        assert picture_path(root, name) is None, name


def test_stage_skips_names_outside_the_source(tmp_path, kit):
    """Through acquire -> captions -> vocab -> images on a COCO-layout directory."""
    good = kit.jpeg_bytes(kit.colour_picture(1))
    secret = tmp_path / "elsewhere" / "private.jpg"
    secret.parent.mkdir()
    secret.write_bytes(kit.jpeg_bytes(kit.colour_picture(2)))  # a perfectly good picture
    root = tmp_path / "coco"
    kit.write_coco(root, "train2014", {"t.jpg": good}, {"t.jpg": ["a red car"]})
    names = {
        "a.jpg": ["a red car"],
        "../../elsewhere/private.jpg": ["a blue car"],
        str(secret): ["a green car"],
        "link.jpg": ["a pink car"],
        "inner.jpg": ["a black car"],
        "folder": ["a white car"],
    }
    kit.write_coco(root, "val2014", {"a.jpg": good}, names)
    (root / "val2014" / "link.jpg").symlink_to(secret)
    (root / "val2014" / "inner.jpg").symlink_to(root / "val2014" / "a.jpg")
    (root / "val2014" / "folder").mkdir()
    res = _run_stages(acquire(str(root), tmp_path / "work"), tmp_path / "work")
    assert _reasons(res) == {
        "val2014/../../elsewhere/private.jpg": "outside source",
        f"val2014/{secret}": "outside source",
        "val2014/link.jpg": "outside source",
        "val2014/folder": "not a file",
    }
    assert res["splits"] == {"train": 1, "val": 2}  # a.jpg, and inner.jpg linked inside the root
    assert res["counts"]["val"]["skipped"] == {"not a file": 1, "outside source": 3}
    g = zarr.open_group(res["path"], mode="r")
    np.testing.assert_array_equal(g["val/rgb"][0], g["val/rgb"][1])  # both are a.jpg


def test_a_fifo_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it for reading would block without O_NONBLOCK
    assert read_picture(tmp_path / "pipe.jpg") == "not a file"


# --------------------------------------------------------------------------- size


@pytest.mark.parametrize("side", [9000, 10000, 20000])  # ours only; Pillow warns; Pillow raises
def test_oversize_header_is_too_large_before_decoding(side, monkeypatch):
    assert side * side > MAX_PICTURE_PIXELS
    data = png_claiming(side, side)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    assert decode_picture(data) == (None, "too large")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's own limit switched off
    assert decode_picture(data) == (None, "too large")


def test_pixel_limit_is_width_times_height(tmp_path, monkeypatch):
    monkeypatch.setattr(pictures, "MAX_PICTURE_PIXELS", 100)
    at_limit, over = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (10, 10), (200, 10, 10)).save(at_limit, "PNG")
    Image.new("RGB", (10, 11), (200, 10, 10)).save(over, "PNG")
    rgb, reason = decode_picture(at_limit.getvalue())
    assert reason is None and rgb.shape == (10, 10, 3)
    assert decode_picture(over.getvalue()) == (None, "too large")


def test_file_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(pictures, "MAX_PICTURE_BYTES", 10)
    (tmp_path / "ten").write_bytes(b"0123456789")
    (tmp_path / "eleven").write_bytes(b"0123456789A")
    assert read_picture(tmp_path / "ten") == b"0123456789"
    assert read_picture(tmp_path / "eleven") == "too large"


def test_oversize_pictures_are_skipped_under_threads(tmp_path, kit, monkeypatch):
    """Many decoding tasks at once on a threaded Dask cluster: every oversize picture is caught."""
    monkeypatch.setattr(images_mod, "STAGING_BLOCK", 1)
    root = tmp_path / "coco"
    kit.write_coco(root, "train2014", {"t.jpg": kit.jpeg_bytes(kit.colour_picture(0))},
                   {"t.jpg": ["a red car"]})  # fmt: skip
    files: dict[str, bytes] = {}
    for i in range(6):
        files[f"good{i}.jpg"] = kit.jpeg_bytes(kit.colour_picture(i))
        files[f"big{i}.png"] = png_claiming(*[(9000, 9000), (10000, 10000), (20000, 20000)][i % 3])
    kit.write_coco(root, "val2014", files, {name: ["a red car"] for name in files})
    res = _run_stages(acquire(str(root), tmp_path / "work"), tmp_path / "work", workers=2)
    assert _reasons(res) == {f"val2014/big{i}.png": "too large" for i in range(6)}
    assert res["splits"] == {"train": 1, "val": 6}


# --------------------------------------------------------------------------- environment faults


def _os_open_fault(exc: BaseException, name: str):
    real = os.open

    def fake(path, flags, *args, **kwargs):
        if os.fspath(path).endswith(name):
            raise exc
        return real(path, flags, *args, **kwargs)

    return os, "open", fake


def _decoder_fault(exc: BaseException, data: bytes):
    real = Image.open

    def fake(fp, *args, **kwargs):
        if isinstance(fp, io.BytesIO) and fp.getvalue() == data:
            raise exc
        return real(fp, *args, **kwargs)

    return Image, "open", fake


FAULTS = {
    "EIO opening": lambda bad: _os_open_fault(OSError(errno.EIO, "Input/output error"), "b.jpg"),
    "EACCES opening": lambda bad: _os_open_fault(PermissionError(errno.EACCES, "denied"), "b.jpg"),
    "memory decoding": lambda bad: _decoder_fault(MemoryError(), bad),
    "EIO decoding": lambda bad: _decoder_fault(OSError(errno.EIO, "Input/output error"), bad),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_environment_fault_fails_the_stage_and_records_nothing(fault, tmp_path, kit, monkeypatch):
    monkeypatch.setattr(images_mod, "STAGING_BLOCK", 1)
    pictures = {n: kit.jpeg_bytes(kit.colour_picture(i)) for i, n in enumerate("abc")}
    pictures = {f"{n}.jpg": data for n, data in pictures.items()}
    root = tmp_path / "coco"
    kit.write_coco(root, "train2014", {"t.jpg": pictures["a.jpg"]}, {"t.jpg": ["a red car"]})
    kit.write_coco(root, "val2014", pictures, {n: ["a red car"] for n in pictures})
    src, work = acquire(str(root), tmp_path / "work"), tmp_path / "work"
    with monkeypatch.context() as patch:
        patch.setattr(*FAULTS[fault](pictures["b.jpg"]))
        with pytest.raises((OSError, MemoryError)):
            _run_stages(src, work)
    status = work / "img.partial" / "_staging" / "val-status"
    assert (status / "0.json").is_file()  # a.jpg's block was saved
    assert not (status / "1.json").exists()  # b.jpg's was not: no skip recorded for it
    assert not (work / "img").exists()
    res = _run_stages(src, work)  # the fault has cleared
    assert res["splits"] == {"train": 1, "val": 3} and res["skipped"] == 0
