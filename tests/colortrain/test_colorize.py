"""Colorize and evaluate from a checkpoint alone; the CLI's outputs, messages and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image
from typer.testing import CliRunner

from colorfeat.lab import rgb_to_lab
from colorfeat.trunk.backbone import prepare_input
from colortrain.colorize import Colorist
from colortrain.evaluate import evaluate_checkpoint
from flows.cli.colortrain import app
from tests.colortrain.conftest import error_line, picture

runner = CliRunner()


def test_checkpoint_trunk_reproduces_the_store_features(
    tiny_checkpoint: Path, tiny_version: Path
) -> None:
    colorist = Colorist.from_checkpoint(tiny_checkpoint)
    group = zarr.open_group(str(tiny_version), mode="r")
    rgb = group["val/rgb"][:4]
    stored = torch.from_numpy(group["val/features/resnet18.layer2"][:4].astype(np.float32))
    gray = np.stack([colorist.gray(im) for im in rgb])  # (4, S, S), the colorize path
    x = torch.from_numpy(np.repeat(gray[..., None], 3, axis=3))
    with torch.no_grad():
        feats = colorist.trunk(prepare_input(x))
    torch.testing.assert_close(feats, stored, rtol=2e-3, atol=2e-3)


def test_colorize_keeps_size_and_lightness_and_ignores_input_colour(tiny_checkpoint: Path) -> None:
    colorist = Colorist.from_checkpoint(tiny_checkpoint)
    rgb = picture()
    tokens, oov = colorist.encode("A RED disc!")
    assert oov == []
    out, heat = colorist.colorize(rgb, tokens)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert heat.ndim == 2
    l_in, l_out = rgb_to_lab(rgb)[..., 0], rgb_to_lab(out)[..., 0]
    assert np.abs(l_in - l_out).mean() < 1.0  # the input's own L (gamut clipping aside)
    # Colour never reaches the model: a gray picture of the same luma gets the same colours.
    luma = np.rint(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    gray = np.repeat(luma[..., None], 3, axis=2)
    ab_colour, _ = colorist.predict_ab(rgb, tokens)
    ab_gray, _ = colorist.predict_ab(gray, tokens)
    np.testing.assert_allclose(ab_colour, ab_gray, atol=1.0)


@pytest.mark.parametrize(("suffix", "mode"), [(".jpg", "RGB"), (".png", "L"), (".png", "RGBA")])
def test_cli_colorize_any_format_at_full_resolution(
    tiny_checkpoint: Path, tmp_path: Path, suffix: str, mode: str
) -> None:
    src = tmp_path / f"in{suffix}"
    Image.fromarray(picture(37, 61)).convert(mode).save(src)
    out = tmp_path / "out" / "result.png"
    result = runner.invoke(
        app,
        ["colorize", str(src), "--caption", "a blue ball", "--checkpoint", str(tiny_checkpoint),
         "--out", str(out), "--attention"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.size == (61, 37) and im.mode == "RGB"
    heat = out.with_name("result.attention.png")
    assert heat.read_bytes()[:4] == b"\x89PNG"
    assert result.stdout.split() == [str(out), str(heat)]


def test_cli_colorize_out_dir_and_oov_warning_once(tiny_checkpoint: Path, tmp_path: Path) -> None:
    paths = []
    for name in ("a", "b"):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(picture()).save(paths[-1])
    result = runner.invoke(
        app,
        ["colorize", *map(str, paths), "--caption", "a magenta zebra", "--checkpoint",
         str(tiny_checkpoint), "--out-dir", str(tmp_path / "o")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png", "b.png"]
    warnings = [ln for ln in result.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "magenta" in warnings[0] and "zebra" in warnings[0]


def test_cli_colorize_user_errors(tiny_checkpoint: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(picture()).save(good)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"garbage")
    ck = str(tiny_checkpoint)
    cases = {
        "caption is empty": [str(good), "--caption", " ?! ", "--checkpoint", ck],
        "no such image": [str(tmp_path / "missing.png"), "--caption", "red", "--checkpoint", ck],
        "cannot read image": [str(corrupt), "--caption", "red", "--checkpoint", ck],
        "not a readable colortrain checkpoint": [str(good), "--caption", "red", "--checkpoint",
                                                 str(bad_ckpt)],
        "no such checkpoint": [str(good), "--caption", "red", "--checkpoint",
                               str(tmp_path / "none.pt")],
    }  # fmt: skip
    for expected, args in cases.items():
        result = runner.invoke(app, ["colorize", *args, "--out", str(tmp_path / "x.png")])
        assert result.exit_code == 1, (expected, result.output)
        assert expected in error_line(result)
    result = runner.invoke(app, ["colorize", str(good), str(good), "--caption", "red",
                                 "--checkpoint", ck, "--out", str(tmp_path / "x.png")])  # fmt: skip
    assert result.exit_code == 1 and "--out takes one image" in error_line(result)
    assert not (tmp_path / "x.png").exists()


def test_cli_evaluate_table_and_json(run_copy: Path, tiny_store: Path) -> None:
    tiny_checkpoint = run_copy  # evaluate refreshes the model card of the run it is given
    result = runner.invoke(
        app, ["evaluate", "--checkpoint", str(tiny_checkpoint), "--store", str(tiny_store),
              "--json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    m = doc["metrics"]
    assert doc["split"] == "val" and doc["images"] == 8
    assert 0 <= m["acc1"] <= m["acc5"] <= 1 and 0 <= m["acc1_weighted"] <= m["acc5_weighted"] <= 1
    assert 5 < m["psnr"] < 100 and 0 <= m["ab_rmse"] < 200 and m["loss"] > 0
    assert evaluate_checkpoint(tiny_checkpoint, str(tiny_store)) == doc  # what the command runs
    table = runner.invoke(
        app, ["evaluate", "--checkpoint", str(tiny_checkpoint), "--store", str(tiny_store)]
    )
    assert table.exit_code == 0
    assert "acc@1" in table.stdout and "PSNR" in table.stdout
    bad = runner.invoke(
        app, ["evaluate", "--checkpoint", str(tiny_checkpoint), "--store", str(tiny_store),
              "--split", "test"]
    )  # fmt: skip
    assert bad.exit_code == 1 and "no split 'test'" in error_line(bad)


def test_cli_fit_rejects_bad_options(tiny_store: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["fit", "--store", str(tiny_store), "--out", str(tmp_path), "--epochs", "0"],
        prog_name="colortrain",
    )  # fmt: skip
    # The option's declared bound, checked by the parser: a usage error, one line.
    assert result.exit_code == 2 and "'--epochs'" in error_line(result)
    result = runner.invoke(
        app, ["fit", "--store", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 1 and "no such directory" in error_line(result)
    result = runner.invoke(
        app, ["fit", "--store", str(tiny_store), "--out", str(tmp_path), "--preset", "huge"]
    )
    assert result.exit_code == 2  # a usage error from the option parser
