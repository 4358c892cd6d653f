"""`colortrain`: fit the colorizer on a feature store, evaluate it, colorize pictures."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from colorfeat.constants import ANNEALED_T
from colortrain.outputs import DEFAULT_BATCH_SIZE, MAX_PIXELS
from flows.cli.colorfeat import COMMAND, Device, ReflowGroup
from flows.cli.errors import reported_errors

app = typer.Typer(
    help="Train and use the language-conditioned colorizer (Manjunatha et al., NAACL 2018).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=ReflowGroup,
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


@app.command(**COMMAND)
def evaluate(
    checkpoint: Path = typer.Option(..., help="A checkpoint written by `colortrain fit`."),
    store: str = typer.Option(..., help="Store root (follows LATEST) or one version."),
    split: str = typer.Option("val", help="Store split to evaluate on."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    report: Path = typer.Option(None, help="Also write DIR/report.html (figures embedded)."),
    device: Device = typer.Option(Device.auto, help="Where to run the model."),
    batch_size: int = typer.Option(32, help="Pictures per batch."),
) -> None:
    """acc@1/acc@5 (plain and rebalanced), PSNR, SSIM, CIEDE2000, colourfulness on a split.

    Given a run's checkpoint (RUN_DIR/checkpoint.pt), also refreshes the run's model card.
    """
    with reported_errors(PROG):
        from colortrain.evaluate import evaluate_run, render_table

        result, report_path = evaluate_run(
            checkpoint, store, split, device=device.value, batch_size=batch_size, report=report
        )
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            render_table(result)
        if report_path is not None:
            typer.echo(f"report: {report_path}", err=True)


@app.command(**COMMAND)
def colorize(
    images: list[Path] = typer.Argument(
        ...,
        metavar="IMAGE",
        show_default=False,
        help=f"Pictures of any format, up to {MAX_PIXELS // 1_000_000} megapixels each.",
    ),
    caption: str = typer.Option(..., metavar="TEXT", help="A sentence naming the colours."),
    checkpoint: Path = typer.Option(
        ..., metavar="FILE", help="A checkpoint written by `colortrain fit`, or its run directory."
    ),
    out: Path = typer.Option(
        None,
        metavar="FILE",
        show_default="next to the input, <stem>.colorized.png",
        help="Output file (one input image).",
    ),
    out_dir: Path = typer.Option(
        None, metavar="DIR", show_default="none", help="Output directory (<stem>.png per input)."
    ),
    attention: bool = typer.Option(
        False,
        help="Also write <stem>.attention.png: the mean activation of the last FiLM block "
        "over channels, upsampled over the picture, with a colour bar.",
    ),
    temperature: float = typer.Option(ANNEALED_T, metavar="T", help="Annealed-mean temperature."),
    batch_size: int = typer.Option(
        DEFAULT_BATCH_SIZE, metavar="N", help="Pictures per batch through trunk and model."
    ),
    device: Device = typer.Option(Device.auto, metavar="auto|cpu|cuda", help="Where to run."),
) -> None:
    """Colorize pictures from a caption at their full resolution, in batches."""
    with reported_errors(PROG):
        from colortrain.colorize import colorize_files

        for path in colorize_files(
            images, caption, checkpoint, out=out, out_dir=out_dir, attention=attention,
            temperature=temperature, device=device.value, batch_size=batch_size,
        ):  # fmt: skip
            typer.echo(str(path))


@app.command("app", **COMMAND)
def serve_app(
    checkpoint: Path = typer.Option(..., help="A checkpoint written by `colortrain fit`."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes the page."),
    port: int = typer.Option(7860, help="TCP port."),
    device: Device = typer.Option(Device.auto, help="Where to run the model."),
) -> None:
    """Serve a Gradio page: a picture, two captions side by side, the temperature."""
    with reported_errors(PROG):
        from colorfeat.device import resolve_device
        from colortrain.app import launch

        launch(checkpoint, host, port, device=str(resolve_device(device.value)))


@app.command(**COMMAND)
def export(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `colortrain fit`."),
    onnx: Path = typer.Option(..., help="The ONNX file to write."),
    input_dtype: str = typer.Option("uint8", help="The picture input's type: uint8 or float32."),
) -> None:
    """Export the trunk and the colorizer as one ONNX graph, checked with onnxruntime."""
    with reported_errors(PROG):
        from colortrain.export import export_onnx

        check = export_onnx(checkpoint, onnx, input_dtype)
        typer.echo(
            f"largest |ab| difference onnxruntime vs PyTorch: {check['max_abs_ab_diff']:.2e} "
            f"(tolerance {check['tolerance']})",
            err=True,
        )
        typer.echo(check["onnx"])
