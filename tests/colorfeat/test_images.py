"""The images stage: decoding edge cases, the zarr layout, worker-count independence, resume."""

from __future__ import annotations

import io
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from PIL import Image

from colorfeat.constants import PRIORS_DIR
from colorfeat.lab import ab_targets
from colorfeat.sources import acquire
from colorfeat.stages import images as images_mod
from colorfeat.stages.captions import captions_stage, load_captions
from colorfeat.stages.images import decode_image, images_stage, layout, process_image
from colorfeat.stages.vocab import load_vocab, vocab_stage

LEXICON = PRIORS_DIR / "color_words.txt"


def _save(path: Path, im: Image.Image, fmt: str, **kw) -> Path:
    im.save(path, fmt, **kw)
    return path


def _rgb(h: int = 24, w: int = 36) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (220, 30, 30)  # red left half
    a[:, w // 2 :] = (30, 30, 220)  # blue right half
    return a


# --------------------------------------------------------------------------- decoding


def test_plain_jpeg(tmp_path):
    path = _save(tmp_path / "a.jpg", Image.fromarray(_rgb()), "JPEG", quality=95)
    rgb, reason = decode_image(path)
    assert reason is None and rgb.shape == (24, 36, 3) and rgb.dtype == np.uint8


def test_corrupt_jpeg(tmp_path):
    good = io.BytesIO()
    Image.fromarray(_rgb()).save(good, "JPEG")
    data = bytearray(good.getvalue())
    data[2:40] = b"\x00" * 38  # wreck the headers after the SOI marker
    (tmp_path / "c.jpg").write_bytes(bytes(data))
    rgb, reason = decode_image(tmp_path / "c.jpg")
    assert rgb is None and reason.startswith(("corrupt", "not an image"))
    (tmp_path / "r.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    assert decode_image(tmp_path / "r.jpg") == (None, "not an image")


def test_truncated_jpeg(tmp_path):
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        good, "JPEG"
    )
    (tmp_path / "t.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    assert decode_image(tmp_path / "t.jpg") == (None, "truncated")


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (20, 10), (0, 255, 255, 0))  # pure red in CMYK
    path = _save(tmp_path / "k.jpg", cmyk, "JPEG", quality=95)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    rgb, reason = decode_image(path)
    assert reason is None and rgb.shape == (10, 20, 3)
    assert rgb[..., 0].mean() > 200 and rgb[..., 1].mean() < 60 and rgb[..., 2].mean() < 60


def test_grayscale_images_are_skipped(tmp_path):
    gray = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (8, 1))
    l_mode = _save(tmp_path / "l.jpg", Image.fromarray(gray), "JPEG")
    rgb_equal = _save(tmp_path / "e.jpg", Image.fromarray(np.stack([gray] * 3, -1)), "JPEG")
    png16 = _save(tmp_path / "i.png", Image.fromarray(gray.astype(np.uint16) * 200), "PNG")
    for path in (l_mode, rgb_equal, png16):
        assert decode_image(path) == (None, "grayscale"), path.name


def test_png_with_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:3, ..., 3] = 255  # top half opaque red, bottom half fully transparent
    rgb, reason = decode_image(_save(tmp_path / "a.png", Image.fromarray(rgba), "PNG"))
    assert reason is None
    assert rgb[0, 0].tolist() == [200, 0, 0] and rgb[5, 5].tolist() == [255, 255, 255]
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    assert decode_image(_save(tmp_path / "la.png", la, "PNG"))[1] == "grayscale"


def test_palette_png(tmp_path):
    p = Image.fromarray(_rgb()).convert("P", palette=Image.ADAPTIVE, colors=4)
    rgb, reason = decode_image(_save(tmp_path / "p.png", p, "PNG"))
    assert reason is None and rgb[0, 0, 0] > 200 and rgb[0, -1, 2] > 200


def test_one_pixel_image(tmp_path):
    path = _save(tmp_path / "one.png", Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
    out = process_image(path, 16)
    assert not isinstance(out, str)
    rgb, ab = out
    assert rgb.shape == (16, 16, 3) and (rgb == [10, 200, 30]).all()
    assert ab.shape == (4, 4) and ab.dtype == np.uint16 and len(np.unique(ab)) == 1


def test_exif_rotation_is_honoured(tmp_path):
    im = Image.fromarray(_rgb(24, 36))  # red left, blue right, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display after a 90 degree clockwise turn
    path = _save(tmp_path / "rot.jpg", im, "JPEG", quality=95, exif=exif.tobytes())
    rgb, reason = decode_image(path)
    assert reason is None and rgb.shape == (36, 24, 3)  # portrait now
    assert rgb[2, 12, 0] > 150 and rgb[-3, 12, 2] > 150  # red on top, blue at the bottom


def test_missing_and_empty_files(tmp_path):
    assert decode_image(tmp_path / "nope.jpg") == (None, "missing file")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert decode_image(tmp_path / "empty.jpg") == (None, "not an image")


def test_process_image_squashes_and_targets(tmp_path):
    path = _save(tmp_path / "a.png", Image.fromarray(_rgb(10, 50)), "PNG")
    rgb, ab = process_image(path, 32)
    assert rgb.shape == (32, 32, 3) and ab.shape == (8, 8)
    np.testing.assert_array_equal(ab, ab_targets(rgb))
    assert rgb[16, 2, 0] > 200 and rgb[16, 29, 2] > 200  # halves kept left and right


def test_layout_targets_chunk_sizes():
    c = layout(224, 20)
    assert 4 << 20 <= c["rgb"] * 224 * 224 * 3 <= 16 << 20
    assert c["ab_bins"] % c["rgb"] == 0  # a copy task's region is aligned for both arrays
    assert 2 << 20 <= c["ab_bins"] * 56 * 56 * 2 <= 16 << 20


# --------------------------------------------------------------------------- the stage


def _stages(tmp_path: Path, src: dict, limit: int | None = None) -> tuple[dict, dict]:
    caps = captions_stage(src, LEXICON, tmp_path / "captions", limit=limit)
    return caps, vocab_stage(caps, tmp_path / "vocab")


def test_stage_with_bad_files_and_missing_images(tmp_path, kit):
    root = tmp_path / "coco"
    good = kit.jpeg_bytes(kit.colour_picture(1))
    gray = kit.jpeg_bytes(np.full((8, 8, 3), 90, np.uint8))
    kit.write_coco(
        root,
        "val2014",
        {"a.jpg": good, "b.jpg": gray, "c.jpg": good[:100], "e.jpg": good},
        {
            "a.jpg": ["a red car", "a car", "two blue birds on one very long branch of a tree"],
            "b.jpg": ["a white wall"],
            "c.jpg": ["a green door"],
            "d.jpg": ["a yellow cab"],  # no picture file
            "e.jpg": ["a pink flower"],
        },
    )
    kit.write_coco(root, "train2014", {"t.jpg": good}, {"t.jpg": ["a red car on a tree"]})
    src = acquire(str(root), tmp_path)
    caps, voc = _stages(tmp_path, src)
    res = images_stage(src, caps, voc, tmp_path / "img", image_size=16, max_len=6)
    assert res["splits"] == {"train": 1, "val": 2} and res["skipped"] == 3
    g = zarr.open_group(res["path"], mode="r")
    assert {s["file"]: s["reason"] for s in g.attrs["skipped"]} == {
        "val2014/b.jpg": "grayscale",
        "val2014/c.jpg": "truncated",
        "val2014/d.jpg": "missing file",
    }
    v = g["val"]
    assert v["image_id"][:].tolist() == [1, 4]  # ids follow the order files were written
    assert v["rgb"].shape == (2, 16, 16, 3) and v["rgb"].dtype == np.uint8
    assert v["ab_bins"].shape == (2, 4, 4) and v["ab_bins"].dtype == np.uint16
    np.testing.assert_array_equal(v["ab_bins"][0], ab_targets(v["rgb"][0]))
    assert v["captions/image_index"][:].tolist() == [0, 0, 1]
    assert v["captions/text"][:].tolist() == [
        "a red car",
        "two blue birds on one very long branch of a tree",
        "a pink flower",
    ]
    vocab = load_vocab(voc)
    tokens = v["captions/tokens"][:]
    assert tokens.shape == (3, 6) and tokens.dtype == np.int32
    assert [vocab[i] for i in tokens[0] if i] == ["a", "red", "car"]
    assert [vocab[i] for i in tokens[2] if i] == ["a", "<unk>", "<unk>"]  # vocab is train's
    assert v["captions/length"][:].tolist() == [3, 6, 3]
    assert res["counts"]["val"]["captions_truncated"] == 1
    assert res["counts"]["val"]["skipped"] == {"grayscale": 1, "missing file": 1, "truncated": 1}
    assert g.attrs["counts"] == res["counts"]
    text = da.from_zarr(res["path"], component="val/captions/text")
    assert text.compute().tolist()[2] == "a pink flower"  # strings are readable by dask
    assert int(da.from_zarr(res["path"], component="val/rgb").sum().compute()) > 0


@pytest.fixture(scope="module")
def synthetic_inputs(tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    src = acquire("synthetic", work, limit=80, seed=0)
    caps, voc = _stages(work, src)
    return work, src, caps, voc


def _files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_same_bytes_with_one_and_two_workers(synthetic_inputs, monkeypatch):
    work, src, caps, voc = synthetic_inputs
    monkeypatch.setattr(images_mod, "STAGING_BLOCK", 8)  # more tasks than workers
    one = images_stage(src, caps, voc, work / "w1", image_size=32, workers=1)
    two = images_stage(src, caps, voc, work / "w2", image_size=32, workers=2, processes=True)
    threads = images_stage(src, caps, voc, work / "t2", image_size=32, workers=2)
    assert one["splits"] == two["splits"] == {"train": 64, "val": 16}
    a, b = _files(Path(one["path"])), _files(Path(two["path"]))
    assert a.keys() == b.keys() and a == b
    assert _files(Path(threads["path"])) == a
    doc = load_captions(caps)
    g = zarr.open_group(one["path"], mode="r")
    assert g["train/image_id"][:].tolist() == [i["image_id"] for i in doc["splits"]["train"]]
    assert g["train/captions/text"].shape[0] == caps["counts"]["train"]["captions_kept"]


def test_interrupted_stage_resumes_without_decoding_again(synthetic_inputs, monkeypatch):
    work, src, caps, voc = synthetic_inputs
    monkeypatch.setattr(images_mod, "STAGING_BLOCK", 16)

    def crash(task):
        raise KeyboardInterrupt

    monkeypatch.setattr(images_mod, "_assemble_region", crash)
    with pytest.raises(KeyboardInterrupt):
        images_stage(src, caps, voc, work / "r", image_size=32)
    assert not (work / "r").exists() and (work / "r.partial").is_dir()
    monkeypatch.undo()
    monkeypatch.setattr(images_mod, "STAGING_BLOCK", 16)
    calls = []
    real = images_mod.decode_picture
    monkeypatch.setattr(images_mod, "decode_picture", lambda *a: calls.append(1) or real(*a))
    res = images_stage(src, caps, voc, work / "r", image_size=32)
    assert len(calls) == 16  # only val, which the crash in train's copy never reached
    assert (work / "r" / "_SUCCESS").is_file()
    assert not (work / "r.partial").exists() and not (work / "r" / "_staging").exists()
    clean = images_stage(src, caps, voc, work / "clean", image_size=32)
    assert _files(Path(res["path"])) == _files(Path(clean["path"]))
    assert images_stage(src, caps, voc, work / "r", image_size=32) == res  # done: no work
