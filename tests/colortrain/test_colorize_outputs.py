"""colorize's outputs never overwrite its inputs or each other, its pictures go through the one
picture reader, and a picture costs a few bytes a pixel, in batches bounded by pixels."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from colorfeat.pictures import load_picture
from colorfeat.stages.images import decode_image
from colortrain import outputs
from colortrain.colorize import Colorist
from flows.cli.colortrain import app
from tests.colortrain.conftest import error_line, picture

runner = CliRunner()


def _save(path: Path, h: int = 12, w: int = 16, seed: int = 0) -> Path:
    Image.fromarray(picture(h, w, seed)).save(path)
    return path


def _colorize(*args: str, checkpoint: Path) -> object:
    return runner.invoke(
        app, ["colorize", *args, "--caption", "a red disc", "--checkpoint", str(checkpoint)]
    )


# --------------------------------------------------------------------------- outputs


def test_outputs_over_inputs_or_each_other_are_refused_before_the_model(tmp_path: Path) -> None:
    never = tmp_path / "no-such-checkpoint.pt"  # the refusals come before it is opened
    a = _save(tmp_path / "a.png")
    a_heat = _save(tmp_path / "a.attention.png", seed=1)  # what a.png's attention would be
    linked = tmp_path / "linked.png"
    os.link(a, linked)  # another name of a.png's file
    (tmp_path / "x").mkdir()
    other_a = _save(tmp_path / "x" / "a.png", seed=2)
    out_dir = str(tmp_path / "o")
    overwrite, collide = "would overwrite the input", "two outputs would be"
    cases = [
        (overwrite, [str(a), str(a_heat), "--attention"]),  # a.png's attention is an input
        (overwrite, [str(a), "--out", str(linked)]),  # a hard link of the input
        (overwrite, [str(a), "--out-dir", str(tmp_path)]),  # the input's own folder
        (collide, [str(a), str(a_heat), "--attention", "--out-dir", out_dir]),
        (collide, [str(a), str(other_a), "--out-dir", out_dir]),
    ]
    before = {p: p.read_bytes() for p in (a, a_heat, other_a)}
    for message, args in cases:
        result = _colorize(*args, checkpoint=never)
        assert result.exit_code == 1, (message, result.output)
        assert message in error_line(result), args
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "o").exists()


def test_only_the_accepted_formats_are_decoded(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Pillow reads TGA, SGI, PCX and many more; colorize, the app and the images stage read the
    same few formats through one reader."""
    src = picture(12, 16)
    for ext in (".tga", ".sgi", ".pcx"):
        path = tmp_path / f"p{ext}"
        Image.fromarray(src).save(path)
        result = _colorize(str(path), checkpoint=tiny_checkpoint)
        assert result.exit_code == 1
        assert "not an image of a format read here (JPEG, PNG" in error_line(result)
        assert decode_image(path) == (None, "not an image")  # the images stage says the same


def test_alpha_and_sixteen_bit_rules_are_the_images_stage_rules(tmp_path: Path) -> None:
    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., :3] = picture(8, 10)
    rgba[:4, ..., 3] = 255  # the lower half is transparent: composed over white
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    colorize_reads = load_picture(path)
    stage_reads, reason = decode_image(path)
    assert reason is None
    np.testing.assert_array_equal(colorize_reads, stage_reads)
    assert (colorize_reads[4:] == 255).all()


# --------------------------------------------------------------------------- memory


def test_full_resolution_join_costs_a_few_bytes_a_pixel(tiny_checkpoint: Path) -> None:
    colorist = Colorist.from_checkpoint(tiny_checkpoint)
    tokens, _ = colorist.encode("a red disc")
    rgb = picture(2000, 3000)  # 6 megapixels
    tracemalloc.start()
    try:
        out, _ = colorist.colorize(rgb, tokens)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == rgb.shape
    # The result itself is 3 bytes a pixel; the rest is one band of floats. Before the join
    # worked in bands it took over 40.
    assert peak / rgb.shape[0] / rgb.shape[1] < 8


def test_a_batch_is_bounded_by_pixels(tiny_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    sizes = [(20, 30), (20, 30), (40, 50), (10, 10), (60, 60), (5, 5)]
    monkeypatch.setattr(outputs, "MAX_BATCH_PIXELS", 2000)
    assert list(outputs.batches(sizes, 8)) == [[0, 1], [2], [3], [4], [5]]  # 3600 goes alone
    assert list(outputs.batches(sizes, 2)) == [[0, 1], [2], [3], [4], [5]]
    paths = [_save(tmp_path / f"p{i}.png", h, w, i) for i, (h, w) in enumerate(sizes)]
    seen: list[int] = []
    real = Colorist.colorize_batch

    def spy(self, rgbs, *args, **kwargs):
        seen.append(sum(r.shape[0] * r.shape[1] for r in rgbs))
        return real(self, rgbs, *args, **kwargs)

    monkeypatch.setattr(Colorist, "colorize_batch", spy)
    result = _colorize(*map(str, paths), "--out-dir", str(tmp_path / "o"),
                       checkpoint=tiny_checkpoint)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(seen) == 5 and max(s for s in seen if s <= 2000) <= 2000


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_must_be_positive(tiny_checkpoint: Path, tmp_path: Path, batch_size: int):
    result = _colorize(str(_save(tmp_path / "a.png")), "--batch-size", str(batch_size),
                       checkpoint=tiny_checkpoint)  # fmt: skip
    assert result.exit_code == 1 and "--batch-size must be at least 1" in error_line(result)
