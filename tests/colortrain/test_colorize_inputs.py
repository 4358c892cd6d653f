"""colorize with what people give it: batches of mixed sizes, huge and 16-bit pictures, outputs
next to the inputs, unwritable destinations, run directories; and the checkpoint/store checks."""

from __future__ import annotations

import errno
import struct
import zlib
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from colorfeat.errors import UserError
from colorfeat.pictures import MAX_PICTURE_PIXELS
from colorfeat.pictures import load_picture as read_image
from colortrain import checkpoint as ckpt_module
from colortrain.attention import FIGURE_DPI, FIGURE_INCHES
from colortrain.checkpoint import load_checkpoint, save_checkpoint, trunk_config, trunk_entry
from colortrain.colorize import Colorist
from flows.cli.colortrain import app
from tests.colortrain.conftest import error_line, picture

runner = CliRunner()
SIZES = [(37, 61), (80, 30), (32, 32), (50, 70), (9, 120)]  # (H, W), mixed on purpose


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (no pixel data): enough for a header check."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_batches_of_mixed_sizes_equal_one_at_a_time(tiny_checkpoint: Path, tmp_path: Path) -> None:
    inputs = []
    for i, (h, w) in enumerate(SIZES):
        inputs.append(tmp_path / f"p{i}.png")
        Image.fromarray(picture(h, w, seed=i)).save(inputs[-1])
    out_dir = tmp_path / "out"
    args = ["colorize", *map(str, inputs), "--caption", "a green disc", "--checkpoint",
            str(tiny_checkpoint), "--out-dir", str(out_dir), "--batch-size", "3",
            "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    colorist = Colorist.from_checkpoint(tiny_checkpoint)
    tokens, _ = colorist.encode("a green disc")
    for i, (h, w) in enumerate(SIZES):
        alone, _ = colorist.colorize(picture(h, w, seed=i), tokens)
        batched = np.asarray(Image.open(out_dir / f"p{i}.png"))
        assert batched.shape == (h, w, 3)
        assert np.abs(batched.astype(int) - alone.astype(int)).max() <= 1


def test_pictures_over_the_pixel_limit_are_refused_from_the_header(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(picture(20, 20)).save(good)
    over_ours = _png_header(tmp_path / "big.png", 12_000, MAX_PICTURE_PIXELS // 12_000 + 1)
    over_pillows = _png_header(tmp_path / "huge.png", 40_000, 40_000)  # a decompression bomb
    for big in (over_ours, over_pillows):
        result = runner.invoke(
            app, ["colorize", str(good), str(big), "--caption", "red", "--checkpoint",
                  str(tiny_checkpoint), "--out-dir", str(tmp_path / "o")]
        )  # fmt: skip
        assert result.exit_code == 1
        assert f"{big} is too large: over 67 megapixels" in error_line(result)
        assert not (tmp_path / "o").exists()  # checked before any picture is colorized


def test_sixteen_bit_pictures_are_scaled_not_clipped(tmp_path: Path) -> None:
    levels = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(levels).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # really read as 16-bit
    rgb = read_image(path)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    want = np.rint(levels / 257.0)
    assert np.abs(rgb[..., 0].astype(int) - want).max() <= 1
    assert (rgb[..., 0] == rgb[..., 2]).all() and 120 < rgb.mean() < 136


def test_outputs_next_to_inputs_by_default_and_run_directory_as_checkpoint(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    src = tmp_path / "photo.jpg"
    Image.fromarray(picture(30, 40)).save(src)
    result = runner.invoke(
        app, ["colorize", str(src), "--caption", "a red disc", "--checkpoint",
              str(tiny_checkpoint.parent)]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    dst = tmp_path / "photo.colorized.png"
    assert result.stdout.split() == [str(dst)]
    with Image.open(dst) as im:
        assert im.size == (40, 30)


def test_unknown_extension_refused_before_the_model_runs(tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    Image.fromarray(picture(10, 10)).save(src)
    missing_ckpt = tmp_path / "no-such-checkpoint.pt"  # never opened: the output is checked first
    result = runner.invoke(
        app, ["colorize", str(src), "--caption", "red", "--checkpoint", str(missing_ckpt),
              "--out", str(tmp_path / "a.gif")]
    )  # fmt: skip
    assert result.exit_code == 1
    line = error_line(result)
    assert "unknown extension '.gif'" in line and ".png, .jpg" in line and ".webp" in line


def test_write_errors_are_one_line_and_leave_no_partial_file(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch
) -> None:
    src = tmp_path / "a.png"
    Image.fromarray(picture(20, 24)).save(src)
    base = ["colorize", str(src), "--caption", "red", "--checkpoint", str(tiny_checkpoint)]
    taken = tmp_path / "taken.png"
    taken.mkdir()  # a directory where the picture should go
    result = runner.invoke(app, [*base, "--out", str(taken)])
    assert result.exit_code == 1 and f"cannot write {taken}: " in error_line(result)

    def disk_full(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half a pic")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    out_dir = tmp_path / "o"
    result = runner.invoke(app, [*base, "--out-dir", str(out_dir)])
    assert result.exit_code == 1
    assert error_line(result).endswith(f"cannot write {out_dir / 'a.png'}: No space left on device")
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(("h", "w"), [(20_000, 10), (10, 20_000)])
def test_attention_figure_is_bounded_and_has_a_colour_bar(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch, h: int, w: int
) -> None:
    src = tmp_path / "thin.png"
    Image.fromarray(picture(h, w)).save(src)
    labels = []
    colorbar = matplotlib.figure.Figure.colorbar

    def spy(self, mappable, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return colorbar(self, mappable, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "colorbar", spy)
    out = tmp_path / "thin.colorized.png"
    result = runner.invoke(
        app, ["colorize", str(src), "--caption", "red", "--checkpoint", str(tiny_checkpoint),
              "--out", str(out), "--attention"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "thin.colorized.attention.png") as im:
        fig_w, _, most = FIGURE_INCHES
        assert max(im.size) <= 1.5 * FIGURE_DPI * max(fig_w, most)
    assert labels == ["mean activation of the last FiLM block"]


def test_store_with_other_vocabulary_words_is_refused(
    tiny_checkpoint: Path, tiny_store: Path, tmp_path: Path
) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    vocab = list(ckpt["vocab"])
    i, j = vocab.index("red"), vocab.index("blue")
    vocab[i], vocab[j] = vocab[j], vocab[i]  # same size, ids mean other words
    swapped = save_checkpoint(tmp_path / "swapped.pt", {**ckpt, "vocab": vocab})
    result = runner.invoke(
        app, ["evaluate", "--checkpoint", str(swapped), "--store", str(tiny_store)]
    )
    assert result.exit_code == 1
    line = error_line(result)
    assert "vocabulary is not the checkpoint's" in line and f"id {min(i, j)}" in line


def test_a_weights_file_trunk_is_found_again_or_the_error_says_how(
    tmp_path: Path, monkeypatch
) -> None:
    from colorfeat.config import BackboneConfig
    from colorfeat.trunk.backbone import create_trunk

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    trunk = create_trunk(BackboneConfig(backbone="resnet18", layer="layer1", weights="none"))
    torch.save(trunk.state_dict(), weights_dir / "mine.pt")
    attrs = {"backbone": "resnet18", "layer": "layer1", "weights": "file:mine.pt",
             "weights_hash": trunk.weights_hash, "input_size": 32}  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ckpt_module.WEIGHTS_ENV, raising=False)
    with pytest.raises(UserError) as err:
        trunk_config("resnet18.layer1", attrs)
    assert "\n" not in str(err.value)
    assert f"set {ckpt_module.WEIGHTS_ENV}=/path/to/mine.pt" in str(err.value)
    monkeypatch.setenv(ckpt_module.WEIGHTS_ENV, str(weights_dir))
    assert trunk_config("resnet18.layer1", attrs).weights == str(weights_dir / "mine.pt")
    assert trunk_entry("resnet18.layer1", attrs)["hash"] == trunk.weights_hash


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_line(tiny_checkpoint: Path, tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    Image.fromarray(picture(10, 10)).save(src)
    result = runner.invoke(
        app, ["colorize", str(src), "--caption", "red", "--checkpoint", str(tiny_checkpoint),
              "--device", "cuda"]
    )  # fmt: skip
    assert result.exit_code == 1 and "no CUDA GPU is available" in error_line(result)
    assert not (tmp_path / "a.colorized.png").exists()
