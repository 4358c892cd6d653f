"""`colortrain`: fit the colorizer on a feature store, evaluate it, colorize pictures."""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import MISSING
from enum import StrEnum
from pathlib import Path
from typing import Any, get_args

import typer

from colorfeat.config import DEVICES
from colorfeat.constants import ANNEALED_T
from colorfeat.pictures import MAX_PICTURE_PIXELS, PICTURE_FORMATS
from colortrain.config import EXPORT_INPUT_DTYPES, FitOption, fit_options
from colortrain.outputs import DEFAULT_BATCH_SIZE
from flows.cli.colorfeat import COMMAND, ReflowGroup
from flows.cli.errors import reported_errors

app = typer.Typer(
    help="Train and use the language-conditioned colorizer (Manjunatha et al., NAACL 2018).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=ReflowGroup,
)
PROG = "colortrain"
KEYWORD = inspect.Parameter.KEYWORD_ONLY


def _choice(name: str, values: tuple[str, ...]) -> type[StrEnum]:
    """A fixed set of values as Typer shows and checks it: [a|b|c]."""
    return StrEnum(name, {v: v for v in values})


Device = _choice("Device", DEVICES)
InputDtype = _choice("InputDtype", EXPORT_INPUT_DTYPES)


# --------------------------------------------------------------------------- fit's options
# `fit`'s options are TrainConfig's fields (colortrain.config.fit_options): names, types,
# defaults, help and choices are declared there once.
def _parameter(opt: FitOption) -> inspect.Parameter:
    """The Typer parameter of one fit option."""
    kind: Any = opt.type if opt.type in (str, int, float, bool) else get_args(opt.type)[0]
    default = None if opt.default is MISSING else opt.default
    metavar = opt.metavar
    choices = opt.current_choices()
    if choices and not callable(opt.choices):
        kind = _choice(opt.name.title().replace("_", ""), choices)
        default = None if default is None else kind(default)
    elif choices:  # a registry, which may grow after this: shown here, checked by the config
        metavar = "[" + "|".join(choices) + "]"
    if opt.path:
        kind = Path
    info = typer.Option(
        ... if opt.required else default,
        opt.flag or "--" + opt.name.replace("_", "-"),
        help=opt.help, min=opt.min, metavar=metavar, show_default=opt.show_default,
    )  # fmt: skip
    return inspect.Parameter(opt.name, KEYWORD, default=info, annotation=kind)


def _alias_name(opt: FitOption, alias: str) -> str:
    return f"{opt.name}__{alias.strip('-').replace('-', '_')}"


def _fit_parameters() -> list[inspect.Parameter]:
    params = []
    for opt in fit_options():
        params.append(_parameter(opt))
        for alias in opt.aliases:  # earlier names, still accepted
            info = typer.Option(None, alias, hidden=True)
            annotation = params[-1].annotation
            params.append(inspect.Parameter(_alias_name(opt, alias), KEYWORD, default=info,
                                            annotation=annotation))  # fmt: skip
    return params


def _with_fit_options(command: Callable[..., None]) -> Callable[..., None]:
    params = _fit_parameters()
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def _config_values(options: dict[str, Any]) -> dict[str, Any]:
    """Option values as TrainConfig takes them: enums as strings, paths as text, aliases folded."""
    values = {
        k: v.value if isinstance(v, StrEnum) else str(v) if isinstance(v, Path) else v
        for k, v in options.items()
    }
    for opt in fit_options():
        for alias in opt.aliases:
            given = values.pop(_alias_name(opt, alias), None)
            if given is not None:
                values[opt.name] = given
    return values


@app.command(**COMMAND)
@_with_fit_options
def fit(**options: Any) -> None:
    """Train a colorizer on a store version; writes RUN_DIR/checkpoint.pt and metrics.json."""
    with reported_errors(PROG):
        from colortrain.config import TrainConfig
        from colortrain.train import fit as run_fit

        result = run_fit(TrainConfig(**_config_values(options)))
        typer.echo(result["checkpoint"])


# --------------------------------------------------------------------------- the others


@app.command(**COMMAND)
def evaluate(
    checkpoint: Path = typer.Option(..., help="A checkpoint written by `colortrain fit`."),
    store: str = typer.Option(..., help="Store root (follows LATEST) or one version."),
    split: str = typer.Option("val", help="Store split to evaluate on."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    report: Path = typer.Option(None, help="Also write DIR/report.html (figures embedded)."),
    device: Device = typer.Option(Device("auto"), help="Where to run the model."),
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
        help=f"Pictures ({', '.join(PICTURE_FORMATS)}), up to "
        f"{MAX_PICTURE_PIXELS / 1e6:.0f} megapixels each.",
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
        DEFAULT_BATCH_SIZE,
        metavar="N",
        help="Pictures per batch through trunk and model (fewer when they are large).",
    ),
    device: Device = typer.Option(Device("auto"), help="Where to run."),
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
    device: Device = typer.Option(Device("auto"), help="Where to run the model."),
) -> None:
    """Serve a Gradio page: a picture, two captions side by side, the temperature.

    Prints the page's address when it is ready; Ctrl-C stops it.
    """
    with reported_errors(PROG):
        from colorfeat.device import resolve_device
        from colortrain.app import serve

        serve(checkpoint, host, port, device=str(resolve_device(device.value)))
    # Stopped and cleaned up: end now. Gradio's server threads are not daemons, and one that
    # hangs in its shutdown must not keep the command running after "stopped".
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command(**COMMAND)
def export(
    checkpoint_arg: Path = typer.Argument(
        None, metavar="CHECKPOINT", show_default=False, help="The same as --checkpoint."
    ),
    checkpoint: Path = typer.Option(
        None, metavar="FILE", show_default=False, help="A checkpoint written by `colortrain fit`."
    ),
    onnx: Path = typer.Option(..., help="The ONNX file to write."),
    input_dtype: InputDtype = typer.Option(
        InputDtype(EXPORT_INPUT_DTYPES[0]), help="The picture input's type."
    ),
) -> None:
    """Export the trunk and the colorizer as one ONNX graph, checked with onnxruntime."""
    with reported_errors(PROG):
        from colorfeat.errors import UserError
        from colortrain.export import export_onnx

        if (checkpoint is None) == (checkpoint_arg is None):
            raise UserError("give the checkpoint once: --checkpoint FILE (or as the argument)")
        check = export_onnx(checkpoint or checkpoint_arg, onnx, input_dtype.value)
        typer.echo(
            f"largest |ab| difference onnxruntime vs PyTorch: {check['max_abs_ab_diff']:.2e} "
            f"(tolerance {check['tolerance']})",
            err=True,
        )
        typer.echo(check["onnx"])
