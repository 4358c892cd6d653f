"""A model kind is one registry entry: registered here, from this file alone, `fit`, `evaluate`
and `colorize` accept it through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from colorfeat.errors import UserError
from colortrain.kinds import MODEL_KINDS, ModelKind, model_kind, register, registered
from colortrain.model import create_model
from flows.cli.colortrain import app
from tests.colortrain.conftest import picture

runner = CliRunner()


class GatedBlock(nn.Module):
    """A residual block whose output the caption scales through a sigmoid gate per channel."""

    def __init__(self, width: int, cond_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, kernel_size=3, padding=1)
        self.gate = nn.Linear(cond_dim, width)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        assert cond is not None
        gate = torch.sigmoid(self.gate(cond))[:, :, None, None]  # (B, C, 1, 1)
        return x + gate * F.relu(self.conv(x))


GATED = ModelKind("gated", "FiLM's place taken by a sigmoid gate", GatedBlock)


def test_a_kind_registered_here_goes_through_fit_evaluate_and_colorize(
    tiny_store: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    with registered(GATED):
        fit = runner.invoke(app, ["fit", "--store", str(tiny_store), "--out", str(run),
                                  "--model", "gated", "--preset", "small", "--epochs", "1",
                                  "--batch-size", "8", "--device", "cpu"])  # fmt: skip
        assert fit.exit_code == 0, fit.output
        checkpoint = Path(fit.stdout.strip().splitlines()[-1])
        state = torch.load(checkpoint, weights_only=True)["model"]["state"]
        assert any(k.startswith("blocks.0.gate.") for k in state)  # really the gated blocks
        evaluate = runner.invoke(app, ["evaluate", "--checkpoint", str(checkpoint), "--store",
                                       str(tiny_store), "--json"])  # fmt: skip
        assert evaluate.exit_code == 0, evaluate.output
        assert 0.0 <= json.loads(evaluate.stdout)["metrics"]["acc5"] <= 1.0
        src = tmp_path / "a.png"
        Image.fromarray(picture(30, 40)).save(src)
        colorize = runner.invoke(app, ["colorize", str(src), "--caption", "a red disc",
                                       "--checkpoint", str(checkpoint)])  # fmt: skip
        assert colorize.exit_code == 0, colorize.output
        assert np.asarray(Image.open(tmp_path / "a.colorized.png")).shape == (30, 40, 3)
    assert "gated" not in MODEL_KINDS  # gone with the block
    gone = runner.invoke(app, ["colorize", str(src), "--caption", "red", "--checkpoint",
                               str(checkpoint)], prog_name="colortrain")  # fmt: skip
    assert gone.exit_code == 1 and "--model must be one of film, concat, nolang" in gone.stderr


def test_registry_is_what_the_command_line_and_the_model_read() -> None:
    with pytest.raises(UserError, match="one of film, concat, nolang, got 'x'"):
        model_kind("x")
    with pytest.raises(ValueError, match="registered already"):
        register(ModelKind("film", "again", GatedBlock))
    help_text = runner.invoke(app, ["fit", "--help"], env={"COLUMNS": "120"}).stdout
    assert "[film|concat|nolang]" in help_text
    shapes = {"feature_channels": 8, "feature_size": 4, "target_size": 8, "vocab_size": 10,
              "embedding_dim": 6, "num_bins": 625}  # fmt: skip
    from colortrain.config import create_model_config

    with registered(GATED):
        model = create_model(create_model_config("gated", "small", shapes))
        assert all(isinstance(b, GatedBlock) for b in model.blocks)
        nolang = create_model(create_model_config("nolang", "small", shapes))
        assert nolang.encoder is None  # a kind says whether it reads the caption
