"""`colortrain`: fit the colorizer on a feature store, evaluate it, colorize pictures."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from colorfeat.cli import COMMAND, Device
from colorfeat.constants import ANNEALED_T
from colorfeat.errors import reported_errors

app = typer.Typer(
    help="Train and use the language-conditioned colorizer (Manjunatha et al., NAACL 2018).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
PROG = "colortrain"


class ModelKind(StrEnum):
    film = "film"
    concat = "concat"
    nolang = "nolang"


class Preset(StrEnum):
    paper = "paper"
    small = "small"


@app.command(**COMMAND)
def fit(
    store: str = typer.Option(..., help="Store root (follows LATEST) or one version."),
    out: Path = typer.Option(
        ..., metavar="RUN_DIR", help="The run directory RUN_DIR: checkpoint, metrics, samples."
    ),
    features: str = typer.Option(None, help="Feature set name; default: the store's first."),
    model: ModelKind = typer.Option(ModelKind.film, help="Colorizer or baseline."),
    preset: Preset = typer.Option(Preset.paper, help="paper: the paper's widths; small: CPU."),
    epochs: int = typer.Option(10, help="Epochs over the train split."),
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps in all."),
    batch_size: int = typer.Option(24, help="Images per step (per process under torchrun)."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    device: Device = typer.Option(Device.auto, help="Where to train."),
    seed: int = typer.Option(0, help="Seed of initialisation, data order and caption choice."),
    resume: bool = typer.Option(False, help="Continue from RUN_DIR/checkpoint.pt."),
    in_memory: bool = typer.Option(False, help="Load the splits into RAM first (no workers)."),
    workers: int = typer.Option(
        0, "--loader-workers", help="DataLoader worker processes (spawned)."
    ),
    old_workers: int = typer.Option(None, "--workers", hidden=True),  # the earlier name
) -> None:
    """Train a colorizer on a store version; writes RUN_DIR/checkpoint.pt and metrics.json."""
    with reported_errors(PROG):
        from colortrain.config import TrainConfig
        from colortrain.train import fit as run_fit

        config = TrainConfig(
            store=store, out=str(out), features=features, model=model.value,
            preset=preset.value, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
            lr=lr, device=device.value, seed=seed, resume=resume, in_memory=in_memory,
            workers=workers if old_workers is None else old_workers,
        )  # fmt: skip
        result = run_fit(config)
        typer.echo(result["checkpoint"])


@app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., help="A checkpoint written by `colortrain fit`."),
    store: str = typer.Option(..., help="Store root (follows LATEST) or one version."),
    split: str = typer.Option("val", help="Store split to evaluate on."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Per-pixel acc@1/acc@5 (plain and rebalanced), PSNR and ab RMSE on a store split."""
    with reported_errors(PROG):
        from colortrain.evaluate import evaluate_checkpoint, render_table

        result = evaluate_checkpoint(checkpoint, store, split)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            render_table(result)


@app.command()
def colorize(
    images: list[Path] = typer.Argument(..., help="Pictures of any size and format."),
    caption: str = typer.Option(..., help="A sentence naming the colours."),
    checkpoint: Path = typer.Option(..., help="A checkpoint written by `colortrain fit`."),
    out: Path = typer.Option(None, help="Output file (one input image)."),
    out_dir: Path = typer.Option(None, help="Output directory (<stem>.png per input)."),
    attention: bool = typer.Option(False, help="Also write <stem>.attention.png heat maps."),
    temperature: float = typer.Option(ANNEALED_T, help="Annealed-mean temperature."),
) -> None:
    """Colorize pictures from a caption at their full resolution."""
    with reported_errors(PROG):
        from colortrain.colorize import colorize_files

        for path in colorize_files(
            images, caption, checkpoint, out=out, out_dir=out_dir, attention=attention,
            temperature=temperature,
        ):  # fmt: skip
            typer.echo(str(path))
