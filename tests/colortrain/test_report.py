"""`colortrain evaluate`: the new metrics, the HTML report, the model card, the dominant hue."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from colorfeat.sources.synthetic import PALETTE_AB
from colortrain.evaluate import colorfulness
from colortrain.hues import confusion, dominant_hue
from colortrain.modelcard import read_card_metadata
from colortrain.report import SECTIONS, swap_caption
from flows.cli.colortrain import app

NEW_METRICS = ("ssim", "ciede2000", "colorfulness_pred", "colorfulness_true")


def test_fit_writes_a_model_card(tiny_checkpoint: Path, tiny_store: Path):
    card = tiny_checkpoint.parent / "README.md"
    meta = read_card_metadata(card)
    assert meta["store"]["version"] == "0123456789abcdef"
    assert meta["store"]["schema"] == "colorfeat/1"
    assert meta["backbone"]["features"] == "resnet18.layer2"
    assert meta["backbone"]["weights"].startswith("none")
    assert meta["training"]["config"]["epochs"] == 2
    assert meta["training"]["last_epoch"]["epoch"] == 2
    assert meta["evaluation"] is None
    text = card.read_text()
    assert "## Limits" in text and "random weights" in text and "built from\n  tiny" in text


def test_evaluate_report_and_card_match_json(run_copy: Path, tiny_store: Path, tmp_path: Path):
    report_dir = tmp_path / "report"
    args = ["evaluate", "--checkpoint", str(run_copy), "--store", str(tiny_store), "--json",
            "--device", "cpu", "--batch-size", "5", "--report", str(report_dir)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert all(k in metrics for k in ("acc1", "acc5", "acc1_weighted", "acc5_weighted", "psnr"))
    assert 0 < metrics["ssim"] <= 1 and metrics["ciede2000"] > 0
    assert metrics["colorfulness_true"] > metrics["colorfulness_pred"] >= 0  # an untrained model
    page = (report_dir / "report.html").read_text()
    assert f"report: {report_dir / 'report.html'}" in result.stderr
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    in_page = {k: float(v) for k, v in re.findall(r'data-key="(\w+)" data-value="([^"]+)"', page)}
    assert in_page == metrics
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 4  # curves, examples, swapped, confusion
    for data in pngs:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            im.verify()
            assert im.format == "PNG" and min(im.size) > 50
    card = read_card_metadata(run_copy.parent / "README.md")
    assert card["evaluation"]["metrics"] == metrics
    assert card["evaluation"]["split"] == "val" and card["evaluation"]["images"] == 8


def test_evaluate_help_shows_defaults_and_rejects_a_bad_batch(tiny_checkpoint, tiny_store):
    help_text = CliRunner().invoke(app, ["evaluate", "--help"], terminal_width=200).stdout
    for default in ("[default: val]", "[default: auto]", "[default: 32]"):
        assert default in help_text
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tiny_checkpoint),
                                      "--store", str(tiny_store), "--batch-size", "0"])  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "colortrain: error: --batch-size must be at least 1, got 0"
    ]


def test_dominant_hue_and_confusion():
    ab = np.zeros((20, 20, 2), np.float32)
    assert dominant_hue(ab) == "gray"
    ab[:6, :6] = PALETTE_AB["purple"]  # 9% of the picture
    ab[10:12, 10:12] = PALETTE_AB["green"]
    assert dominant_hue(ab) == "purple"
    lexicon = frozenset({"red", "gray", "purple", "green"})
    captions = ["a red disc", "a purple disc", "a red disc on a gray floor", "the red ball"]
    words, counts = confusion(captions, ["red", "green", "red", "gray"], lexicon)
    assert words == ["purple", "red"]  # the two-colour caption is left out
    from colortrain.hues import HUE_NAMES

    assert counts[1, HUE_NAMES.index("red")] == 1 and counts[1, HUE_NAMES.index("gray")] == 1
    assert counts[0, HUE_NAMES.index("green")] == 1 and counts.sum() == 3


def test_colorfulness_and_swap_caption():
    gray = np.full((8, 8, 3), 120, np.uint8)
    assert colorfulness(gray) == 0.0
    red = gray.copy()
    red[..., 0] = 250
    assert colorfulness(red) == pytest.approx(0.3 * np.hypot(130, 65))
    assert (
        swap_caption("A Red disc, and a blue one", ["blue", "red"]) == "a blue disc and a blue one"
    )
    assert swap_caption("a plain disc", ["blue", "red"]) is None
