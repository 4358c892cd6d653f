"""Captions are untrusted text: drawn literally, escaped in HTML and Markdown, capped on sheets."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from colorfeat.store import open_store
from colorfeat.store.schema import CAPTION_TEXT
from colortrain.attention import attention_figure
from colortrain.config import TrainConfig
from colortrain.sheets import sample_sheet
from colortrain.text import markdown_text, wrapped_lines
from colortrain.train import fit
from flows.cli.colortrain import app
from tests.colortrain.conftest import picture, write_store

LONG = " ".join(["word"] * 4000)  # 20,000 characters
PREFIX = r"$^$ a sign that says $\foo$ <script>alert(1)</script> **bold** [link](http://x) | "


def _hostile(split: str, k: int, text: str) -> str:
    return f"{PREFIX}{text} {LONG}"


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("hostile"), caption_text=_hostile)


@pytest.fixture(scope="module")
def hostile_run(hostile_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile-run")
    config = TrainConfig(
        store=str(hostile_store), out=str(out), preset="small", epochs=1, batch_size=8,
        progress=False, tensorboard=False, sample_images=8,
    )  # fmt: skip
    return Path(fit(config)["checkpoint"])


def test_fit_draws_hostile_captions_on_its_sample_sheet(hostile_run: Path) -> None:
    sheet = hostile_run.parent / "samples" / "epoch-001.png"
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.size[1] > 200
    assert (hostile_run.parent / "README.md").is_file()


def test_evaluate_report_shows_hostile_captions_escaped_and_in_full(
    hostile_run: Path, hostile_store: Path, tmp_path: Path
) -> None:
    args = ["evaluate", "--checkpoint", str(hostile_run), "--store", str(hostile_store),
            "--device", "cpu", "--report", str(tmp_path / "report")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    texts = {str(t) for t in open_store(str(hostile_store)).array("val", CAPTION_TEXT)[:]}
    shown = [html.unescape(s) for s in re.findall(r'<span class="full">([^<]*)</span>', page)]
    assert len(shown) == 12  # six examples, each caption in both picture sections
    assert set(shown) <= texts  # each one whole, not cut
    assert any(LONG in s for s in shown) and any("$\\foo$" in s for s in shown)


def test_a_sheet_caps_a_long_caption(tmp_path: Path) -> None:
    gray = np.full((32, 32), 128, np.uint8)
    rgb = np.full((32, 32, 3), 128, np.uint8)
    t0 = time.perf_counter()
    sample_sheet([(gray, rgb, rgb, "a red disc")], tmp_path / "short.png")
    short = time.perf_counter() - t0
    t0 = time.perf_counter()
    sample_sheet([(gray, rgb, rgb, LONG + " $x$")], tmp_path / "long.png")
    long = time.perf_counter() - t0
    assert long < 3 * short + 0.5  # uncapped: seconds
    with Image.open(tmp_path / "short.png") as a, Image.open(tmp_path / "long.png") as b:
        assert b.size[1] < 2 * a.size[1]
    text = wrapped_lines(LONG, 28, 6)
    assert len(text.splitlines()) == 6 and text.endswith("…")
    assert max(len(line) for line in text.splitlines()) <= 28


def test_attention_figure_draws_dollar_signs_literally(tmp_path: Path) -> None:
    heat = np.random.default_rng(0).random((4, 4)).astype(np.float32)
    image = np.full((40, 60, 3), 90, np.uint8)
    for caption in ("$^$ a red disc", r"a red sign that says $\foo$", LONG):
        path = tmp_path / "attention.png"
        attention_figure(heat, image, path, caption=caption)
        with Image.open(path) as im:
            assert im.format == "PNG"


def test_colorize_attention_with_dollar_signs_writes_both_outputs(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(picture()).save(src)
    out = tmp_path / "out"
    caption = "$^$ a red disc $\\foo$"
    args = ["colorize", str(src), "--caption", caption, "--attention", "--checkpoint",
            str(tiny_checkpoint), "--out-dir", str(out), "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == ["in.attention.png", "in.png"]  # no temporary file left
    for name in written:
        with Image.open(out / name) as im:
            assert im.format == "PNG"


def test_markdown_text_leaves_nothing_to_interpret() -> None:
    evil = "a`b` ![x](http://e/x.png) <img src=x onerror=1> | *c* \n# d"
    out = markdown_text(evil)
    assert "\n" not in out
    for raw in ("`", "![", "](", "<img", "|", "*c*", "# d"):
        assert raw not in out.replace("\\" + raw[0], "")
    assert re.sub(r"\\(.)", r"\1", out) == evil.replace(" \n", "  ")
