"""The help of `colorfeat`: whole at 80 columns, and saying what the checks accept."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from colorfeat.config import (
    IMAGE_SIZE_EXAMPLES,
    IMAGE_SIZE_HELP,
    TRUNK_EXAMPLES,
    BackboneConfig,
    PipelineConfig,
    rebuild_options,
)
from colorfeat.constants import DEFAULT_IMAGE_SIZE, TARGET_STRIDE
from colorfeat.errors import UserError

COLORFEAT = str(Path(sys.executable).with_name("colorfeat"))


def help_text(*command: str, columns: int = 80) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "TERMINAL_WIDTH": str(columns)}
    out = subprocess.run([COLORFEAT, *command, "--help"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert max(len(line) for line in out.stdout.splitlines()) <= columns
    return out.stdout


def words(text: str) -> str:
    """The text without the table's borders, its words joined by single spaces."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("command", [(), ("run",), ("schedule",), ("store",), ("store", "ls")])
def test_no_help_is_cut_at_80_columns(command):
    shown = help_text(*command)
    assert "…" not in shown  # what Rich puts where a word does not fit its column


def test_every_rebuild_option_shows_its_whole_help():
    shown = words(help_text("run"))
    for option in rebuild_options():
        assert " ".join(option.help.split()) in shown, option.name


def test_every_trunk_the_help_names_is_accepted_at_every_size_it_names():
    for backbone, layer in TRUNK_EXAMPLES.items():
        BackboneConfig(backbone=backbone, layer=layer, image_size=DEFAULT_IMAGE_SIZE).check()
    for size in IMAGE_SIZE_EXAMPLES:
        PipelineConfig.from_options(image_size=size).backbone.check()


def test_the_image_size_rule_in_the_help_is_the_one_checked():
    from colorfeat.trunk.backbone import check_trunk

    stride = int(re.search(r"\((\d+) for layer2 of a ResNet\)", IMAGE_SIZE_HELP)[1])
    assert f"a multiple of {TARGET_STRIDE} " in IMAGE_SIZE_HELP
    for resnet in ("resnet18", "resnet101"):
        assert check_trunk(resnet, "layer2", DEFAULT_IMAGE_SIZE).stride == stride
    size = 3 * TARGET_STRIDE * stride + TARGET_STRIDE  # a multiple of the one, not the other
    with pytest.raises(UserError, match=f"not a multiple of the stride {stride}"):
        PipelineConfig.from_options(image_size=size).backbone.check()
    with pytest.raises(UserError, match=f"--image-size must be divisible by {TARGET_STRIDE}"):
        PipelineConfig.from_options(image_size=TARGET_STRIDE * stride + 1)


def test_colorfeat_offers_shell_completion(tmp_path):
    shown = help_text()
    assert "--install-completion" in shown and "--show-completion" in shown
    assert "<bool>" not in shown
    env = {**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash"}
    # Typer names the shell from the process tree: run from bash, whatever started the tests
    # (the `; exit` keeps bash from replacing itself with the command).
    script = subprocess.run(
        ["bash", "-c", '"$0" --show-completion; exit $?', COLORFEAT],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert script.returncode == 0 and "_colorfeat_completion()" in script.stdout
    assert list(tmp_path.iterdir()) == []  # shown, not installed
