"""ONNX export: masked bi-LSTM == packed one; onnxruntime == PyTorch; the docs example runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from typer.testing import CliRunner

from colortrain.checkpoint import load_checkpoint, save_checkpoint
from colortrain.colorize import Colorist
from colortrain.export import TOLERANCE, MaskedCaptionEncoder, example_inputs, export_onnx
from colortrain.model import CaptionEncoder
from flows.cli.colortrain import app

VIVID = 100.0  # logits scaled by this: the tiny model's colours reach ~55 levels from gray
CAPTION = "a red bus parked by a white house"  # the caption of the docs example
DOCS = Path(__file__).resolve().parents[2] / "docs" / "export.md"


def test_masked_encoder_equals_packed_lstm():
    torch.manual_seed(0)
    encoder = CaptionEncoder(vocab_size=20, embedding_dim=8, hidden=6, dropout=0.2).eval()
    masked = MaskedCaptionEncoder(encoder).eval()
    lengths = torch.tensor([7, 3, 1, 5])
    tokens = torch.randint(2, 20, (4, 7))
    tokens[torch.arange(7)[None] >= lengths[:, None]] = 0
    with torch.no_grad():
        want = encoder(tokens, lengths)
        got = masked(tokens, lengths)
        # Padding must not leak in: the same captions padded further give the same states.
        longer = masked(torch.nn.functional.pad(tokens, (0, 4)), lengths)
    assert want.shape == (4, 12)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(longer, want, atol=1e-6)


def _onnx_vs_torch(path: Path, checkpoint: Path, dtype: str) -> float:
    colorist = Colorist.from_checkpoint(checkpoint)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # Another batch size and caption length than the export's: both axes are dynamic.
    image, tokens, lengths = example_inputs(colorist.image_size, len(colorist.vocab), batch=3,
                                            length=9, dtype=dtype, seed=1)  # fmt: skip
    (got,) = session.run(["ab"], {"image": image, "tokens": tokens, "lengths": lengths})
    gray = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # (B, S, S)
    size = (colorist.image_size, colorist.image_size)
    want, _ = colorist.predict_ab_batch(gray, torch.from_numpy(tokens),
                                        torch.from_numpy(lengths), size)  # fmt: skip
    assert got.shape == want.shape == (3, *size, 2)
    return float(np.abs(got - want).max())


def test_export_cli_uint8_matches_pytorch(tiny_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "colorizer.onnx"
    result = CliRunner().invoke(app, ["export", str(tiny_checkpoint), "--onnx", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    reported = float(re.search(r"difference onnxruntime vs PyTorch: (\S+)", result.stderr)[1])
    assert reported < TOLERANCE
    assert _onnx_vs_torch(out, tiny_checkpoint, "uint8") < TOLERANCE
    meta = ort.InferenceSession(str(out)).get_modelmeta().custom_metadata_map
    assert meta["vocab"].split("\n") == list(Colorist.from_checkpoint(tiny_checkpoint).vocab)
    assert meta["image_size"] == "32"


def test_export_float_input_and_docs_example(tiny_checkpoint: Path, tmp_path: Path, monkeypatch):
    out = tmp_path / "colorizer.onnx"
    check = export_onnx(tiny_checkpoint, out, "float32")
    assert check["max_abs_ab_diff"] < TOLERANCE
    assert _onnx_vs_torch(out, tiny_checkpoint, "float32") < TOLERANCE
    # The documented example, with nothing of this project imported, on a 45 x 30 picture.
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "photo.jpg", quality=95)
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S)[1]
    assert "colortrain" not in code and "colorfeat" not in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOCS), "exec"), {"__name__": "docs"})
    colorized = np.asarray(Image.open(tmp_path / "colorized.png"))
    assert colorized.shape == (30, 45, 3)


def test_export_rejects_a_wrong_suffix(tiny_checkpoint: Path, tmp_path: Path):
    result = CliRunner().invoke(
        app, ["export", str(tiny_checkpoint), "--onnx", str(tmp_path / "model.pt")]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"colortrain: error: --onnx must name a .onnx file, got {tmp_path / 'model.pt'}"
    ]
    assert not list(tmp_path.iterdir())


def _docs_example(tmp_path: Path, onnx: Path, picture: Path, monkeypatch) -> np.ndarray:
    """Run docs/export.md's example (nothing of this project imported) on `picture`."""
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S)[1]
    assert "colortrain" not in code and "colorfeat" not in code
    code = code.replace('"colorizer.onnx"', repr(str(onnx))).replace(
        '"photo.jpg"', repr(str(picture))
    )
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOCS), "exec"), {"__name__": "docs"})
    return np.asarray(Image.open(tmp_path / "colorized.png"))


def _vivid(checkpoint: Path, out: Path) -> Path:
    """The checkpoint with its logits scaled up: strong, fast-varying colours, which show any
    difference in preprocessing or decoding."""
    ckpt = load_checkpoint(checkpoint)
    state = ckpt["model"]["state"]
    state["classifier.weight"] = state["classifier.weight"] * VIVID
    state["classifier.bias"] = state["classifier.bias"] * VIVID
    return save_checkpoint(out, ckpt)


def test_docs_example_agrees_with_colorize_within_one_level(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch
):
    ckpt = _vivid(tiny_checkpoint, tmp_path / "vivid.pt")
    onnx = tmp_path / "vivid.onnx"
    export_onnx(ckpt, onnx)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:301, 0:457]  # not a whole multiple of S = 32 either way
    photo = np.stack([120 + 80 * np.sin(xx / 17.0), 100 + 60 * np.cos(yy / 13.0),
                      90 + 50 * np.sin((xx + yy) / 29.0)], axis=-1)  # fmt: skip
    photo = np.clip(photo + rng.normal(0, 20, photo.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    out = tmp_path / "colorize.png"
    result = CliRunner().invoke(app, ["colorize", str(path), "--caption", CAPTION,
                                      "--checkpoint", str(ckpt), "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    ours = np.asarray(Image.open(out)).astype(int)
    theirs = _docs_example(tmp_path, onnx, path, monkeypatch).astype(int)
    colourful = np.abs(ours - ours.mean(axis=2, keepdims=True)).max()
    assert colourful > 40  # the model really colours: a gray result would agree trivially
    assert np.abs(ours - theirs).max() <= 1


def test_export_takes_checkpoint_as_option_and_shows_choices(tiny_checkpoint: Path, tmp_path):
    out = tmp_path / "c.onnx"
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--checkpoint", str(tiny_checkpoint), "--onnx",
                                 str(out), "--input-dtype", "float32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    meta = ort.InferenceSession(str(out)).get_modelmeta().custom_metadata_map
    assert meta["input_dtype"] == "float32"
    both = runner.invoke(app, ["export", str(tiny_checkpoint), "--checkpoint",
                               str(tiny_checkpoint), "--onnx", str(out)])  # fmt: skip
    assert both.exit_code == 1 and "give the checkpoint once" in both.stderr
    help_text = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "120"}).stdout
    assert "[uint8|float32]" in help_text and "--checkpoint" in help_text
