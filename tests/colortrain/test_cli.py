"""The `colortrain` commands say things once and alike: fit's options are TrainConfig's fields,
every device option shows its choices the same way, completion is offered as `colorfeat` does."""

from __future__ import annotations

from dataclasses import MISSING, fields

import typer
from typer.testing import CliRunner

from colorfeat.config import DEVICES
from colortrain.config import TrainConfig, fit_options
from flows.cli.colortrain import app

runner = CliRunner()


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_fit_options_are_the_config_fields() -> None:
    command = typer.main.get_command(app).commands["fit"]
    params = {p.name: p for p in command.params if not p.hidden and p.name != "help"}
    declared = {f.name: f for f in fields(TrainConfig) if f.metadata}
    assert list(params) == list(declared)  # the same options, in the same order
    for name, param in params.items():
        default = declared[name].default
        want = None if default is MISSING else default
        got = param.default.value if hasattr(param.default, "value") else param.default
        assert got == want, name
        assert param.required == (default is MISSING), name
    text = _help("fit")
    for opt in fit_options():
        assert (opt.flag or "--" + opt.name.replace("_", "-")) in text
        assert opt.help.split(";")[0] in " ".join(text.split()), opt.name


def test_earlier_option_name_still_works() -> None:
    command = typer.main.get_command(app).commands["fit"]
    hidden = [p.opts for p in command.params if p.hidden]
    assert ["--workers"] in hidden and "--workers" not in _help("fit")


def test_every_device_option_shows_its_choices_alike() -> None:
    shown = "[" + "|".join(DEVICES) + "]"
    for command in ("fit", "evaluate", "colorize", "app"):
        lines = [line for line in _help(command).splitlines() if "--device" in line]
        assert len(lines) == 1 and shown in lines[0], (command, lines)


def test_preset_default_follows_the_device_and_the_help_says_so() -> None:
    assert TrainConfig(store="s", out="o", device="cpu").preset == "small"
    assert TrainConfig(store="s", out="o", device="cpu", preset="paper").preset == "paper"
    line = next(x for x in _help("fit").splitlines() if "--preset" in x)
    assert "[paper|small]" in line and "paper on cuda, small on cpu" in line


def test_completion_is_offered_as_colorfeat_offers_it() -> None:
    text = _help()
    assert "--install-completion" in text and "--show-completion" in text
