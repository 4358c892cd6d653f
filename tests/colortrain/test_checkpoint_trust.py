"""A checkpoint is untrusted: its model config is validated with bounds, and its weights' shapes
are compared with the config before any model is built."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import colortrain.checkpoint as checkpoint_module
from colorfeat.errors import UserError
from colortrain.checkpoint import load_checkpoint, load_model, save_checkpoint
from flows.cli.colortrain import app
from tests.colortrain.conftest import error_line


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint: Path) -> dict:
    return load_checkpoint(tiny_checkpoint)


def _with(ckpt: dict, **changes) -> dict:
    lying = copy.copy(ckpt)
    lying["model"] = {**ckpt["model"], "config": {**ckpt["model"]["config"], **changes}}
    return lying


def test_load_model_builds_the_checkpoints_model(ckpt: dict) -> None:
    model = load_model(ckpt)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"]["state"][key]), key


def test_a_config_that_lies_about_sizes_is_refused_before_building(
    ckpt: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    built_on: list[str] = []
    create = checkpoint_module.create_model

    def recording(config):
        built_on.append(torch.empty(0).device.type)  # "meta" inside the shape check
        return create(config)

    monkeypatch.setattr(checkpoint_module, "create_model", recording)
    for changes in ({"width": 1024}, {"num_blocks": 9}, {"lstm_hidden": 2048}):
        built_on.clear()
        with pytest.raises(UserError, match="do not fit its model config"):
            load_model(_with(ckpt, **changes))
        assert built_on == ["meta"], changes  # no real model was ever allocated
    with pytest.raises(UserError, match="over 268,435,456 weights"):
        load_model(_with(ckpt, width=4096))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vocab_size": 10**7}, r"vocab_size=10000000 is outside \[2, 2000000\]"),
        ({"num_blocks": True}, "num_blocks is not an integer"),
        ({"width": "64"}, "width is not an integer"),
        ({"dropout": float("nan")}, "dropout=nan is outside"),
        ({"kind": "film" * 100}, "kind is not a short string"),
        ({"extra": [1, 2]}, "unknown fields: extra"),
        ({"vocab_size": 15}, "vocabulary does not have the 15 words"),
    ],
)
def test_config_values_are_checked_against_the_schema(ckpt: dict, changes, message) -> None:
    with pytest.raises(UserError, match=message):
        load_model(_with(ckpt, **changes))


def test_evaluate_refuses_a_lying_checkpoint_in_one_line(
    ckpt: dict, tiny_store: Path, tmp_path: Path
) -> None:
    path = save_checkpoint(tmp_path / "checkpoint.pt", _with(ckpt, width=1024))
    args = ["evaluate", "--checkpoint", str(path), "--store", str(tiny_store), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "do not fit its model config" in error_line(result)
