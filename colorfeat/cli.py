"""The `colorfeat` command: rebuild the feature store, inspect it, schedule rebuilds."""

from __future__ import annotations

import inspect
import json
import sys
from enum import StrEnum
from pathlib import Path

import typer
from typer._click.exceptions import UsageError
from typer.core import TyperCommand, TyperGroup

from colorfeat.errors import reported_errors

# Every command shows its defaults.
CONTEXT = {"show_default": True}
_TYPE_METAVARS = {str: "TEXT", int: "INTEGER", float: "FLOAT", Path: "PATH"}


class PlainHelpCommand(TyperCommand):
    """A command whose help names values as TEXT, INTEGER, PATH, [a|b] and arguments in capitals.

    Typer's own labels (`<str>`, `<bool>` on flags, `{root}` in the usage line) say nothing a
    reader needs.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is None:
                param.metavar = _usual_metavar(param)
            if param.param_type_name == "argument":  # its name already says what it is
                param.display_type_rich = _no_label
                param._usage_display_name = lambda p=param: p.display_name_raw  # ROOT, not {ROOT}

    def make_context(self, info_name, args, parent=None, **extra):  # noqa: ANN001, ANN201
        """Parse the command line; a bad option is one line on stderr and exit status 2."""
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as exc:
            prog = (parent.find_root().info_name if parent else None) or "colorfeat"
            print(f"{prog}: error: {exc.format_message()}", file=sys.stderr)
            raise typer.Exit(2) from None

    def get_help_option(self, ctx: typer.Context):  # noqa: ANN201 (Typer's own option type)
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class ReflowGroup(TyperGroup):
    """A command group whose help, and each of its commands' help, flows as paragraphs.

    Typer's rich help keeps a docstring's single line breaks, which then break sentences
    mid-line; here only blank lines (paragraphs) and list items start a new line.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        for command in (self, *self.commands.values()):
            command.help = reflow(command.help)


def reflow(text: str | None) -> str | None:
    """Join a docstring's wrapped lines; keep blank-line paragraphs and `-`/`*` list items."""
    if not text:
        return text
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.lstrip().startswith(("- ", "* ", "\b")):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _no_label(ctx: typer.Context) -> None:
    return None


def _usual_metavar(param) -> str:  # noqa: ANN001 (a Typer parameter)
    if getattr(param, "is_flag", False):
        return ""
    if param.param_type_name == "argument":
        return param.name.upper()
    desc = param.type_descriptor
    if desc.is_choice:
        return (
            "[" + "|".join(str(c.value if hasattr(c, "value") else c) for c in desc.choices) + "]"
        )
    if desc.is_path:
        return "PATH"
    return _TYPE_METAVARS.get(desc.annotation, "TEXT")


COMMAND = {"cls": PlainHelpCommand, "context_settings": CONTEXT}
app = typer.Typer(
    help="Build and inspect the versioned Zarr feature store for learning to colour from language.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
    cls=ReflowGroup,
)
store_app = typer.Typer(
    help="Inspect a feature store.", no_args_is_help=True, context_settings=CONTEXT, cls=ReflowGroup
)
app.add_typer(store_app, name="store")


class WeightsChoice(StrEnum):
    imagenet = "imagenet"
    none = "none"


class Precision(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@app.command(**COMMAND)
def grid(
    out: Path = typer.Option(Path("priors/lab_grid_625.npy"), help="Where to write the grid."),
) -> None:
    """Write the 625-bin ab grid (float32, a-major) as a .npy file."""
    import numpy as np

    from colorfeat.lab import ab_grid

    with reported_errors("colorfeat"):
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, ab_grid())
        typer.echo(str(out))


@store_app.command("info", **COMMAND)
def store_info(
    path: str = typer.Argument(..., help="A store root (follows LATEST) or one version."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe one store version: splits, arrays, shapes, chunks, codecs and attrs."""
    from colorfeat.store import describe_version, open_store, render_info

    with reported_errors("colorfeat"):
        info = describe_version(open_store(path))
        typer.echo(json.dumps(info, indent=2, sort_keys=True) if as_json else render_info(info))


@store_app.command("ls", **COMMAND)
def store_ls(root: str = typer.Argument(..., help="A store root.")) -> None:
    """List the versions of a store root: which is LATEST, sizes, created time."""
    from colorfeat.store import list_versions, render_versions

    with reported_errors("colorfeat"):
        typer.echo(render_versions(list_versions(root)))


# --------------------------------------------------------------------------- run and schedule
# The options of a rebuild, shared by `run` and `schedule`.
_SOURCE = typer.Option(
    ..., help="coco2014, coco2017, synthetic, a COCO-layout directory, or a mirror URL."
)
_STORE = typer.Option(..., help="Store root: a directory or an fsspec URL (s3://...).")
_WORK_DIR = typer.Option(
    Path("work"), help="Local work dir: downloads, stage outputs, Prefect state."
)
_LIMIT = typer.Option(None, min=1, help="Use at most N images (synthetic: generate N).")
_IMAGE_SIZE = typer.Option(224, help="Square image size S (a multiple of 32).")
_BACKBONE = typer.Option("resnet101", help="Frozen trunk: resnet18/34/50/101/152.")
_LAYER = typer.Option("layer2", help="Trunk stage whose output is stored: layer1..layer4.")
_WEIGHTS = typer.Option("imagenet", help="imagenet, none (seeded random) or a state-dict FILE.")
_DEVICE = typer.Option(Device.auto, help="Where to run the trunk.")
_PRECISION = typer.Option(
    Precision.auto,
    help="Trunk compute precision; auto: bf16 on cuda, fp32 on any CPU. Part of the version id.",
)
_BATCH_SIZE = typer.Option(64, min=1, help="Images per forward pass.")
_EMBEDDINGS = typer.Option("word2vec", help="word2vec (fit on train captions) or a vectors FILE.")
_WORKERS = typer.Option(1, min=1, help="Local Dask worker processes for the CPU stages.")
_DASK_ADDRESS = typer.Option(None, help="Run the CPU stages on this Dask scheduler instead.")
_SEED = typer.Option(0, help="Seed of the synthetic source, word2vec and random weights.")


def _rebuild_parameters(
    source: str,
    store: str,
    work_dir: Path,
    limit: int | None,
    image_size: int,
    backbone: str,
    layer: str,
    weights: str,
    device: Device,
    batch_size: int,
    embeddings: str,
    workers: int,
    dask_address: str | None,
    seed: int,
    precision: Precision = Precision.auto,
) -> dict:
    """Validated parameters of the rebuild flow (absolute paths); raises UserError.

    Checks everything that can be checked without doing the work, before anything starts.
    """
    from colorfeat.config import BackboneConfig, PipelineConfig
    from colorfeat.errors import UserError
    from colorfeat.store import check_store_root
    from flows.plan import check_source, require_device

    check_source(source)
    if workers > 1 and dask_address:
        raise UserError("give --workers or --dask-address, not both")
    check_store_root(store)
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise UserError(f"--weights must be imagenet, none or a file; no file {weights!r}")
    if embeddings != "word2vec" and not Path(embeddings).is_file():
        raise UserError(f"--embeddings must be word2vec or a file; no file {embeddings!r}")
    trunk = BackboneConfig(backbone, layer, weights, image_size, seed)
    local = {"store": store if "://" in store else str(Path(store).resolve())}
    PipelineConfig(source=source, limit=limit, backbone=trunk, device=device.value,
                   batch_size=batch_size, workers=workers, dask_address=dask_address,
                   seed=seed, precision=precision.value, **local)  # fmt: skip
    require_device(device.value)
    is_path = weights not in ("imagenet", "none")
    return {
        "source": _source_parameter(source),
        "store": local["store"],
        "work_dir": str(work_dir.resolve()),
        "limit": limit,
        "image_size": image_size,
        "backbone": backbone,
        "layer": layer,
        "weights": str(Path(weights).resolve()) if is_path else weights,
        "device": device.value,
        "batch_size": batch_size,
        "embeddings": embeddings if embeddings == "word2vec" else str(Path(embeddings).resolve()),
        "workers": workers,
        "dask_address": dask_address,
        "seed": seed,
        "precision": precision.value,
    }


def _source_parameter(source: str) -> str:
    """The source as the flow receives it: a directory made absolute; a URL's secrets concealed.

    Flow parameters are recorded by Prefect, so credentials in a URL travel in this process's
    environment instead (`colorfeat.redact.conceal`), which the flow run inherits.
    """
    from colorfeat.redact import conceal

    if "://" in source:
        return conceal(source)
    return str(Path(source).resolve()) if Path(source).is_dir() else source


@app.command(**COMMAND)
def run(
    source: str = _SOURCE,
    store: str = _STORE,
    work_dir: Path = _WORK_DIR,
    limit: int = _LIMIT,
    image_size: int = _IMAGE_SIZE,
    backbone: str = _BACKBONE,
    layer: str = _LAYER,
    weights: str = _WEIGHTS,
    device: Device = _DEVICE,
    precision: Precision = _PRECISION,
    batch_size: int = _BATCH_SIZE,
    embeddings: str = _EMBEDDINGS,
    workers: int = _WORKERS,
    dask_address: str = _DASK_ADDRESS,
    seed: int = _SEED,
    dry_run: bool = typer.Option(
        False, help="Print each stage's plan, download size, disk and time needed; do nothing."
    ),
) -> None:
    """Rebuild the feature store and publish a version (or reuse the identical one).

    Runs the Prefect rebuild flow with an embedded API (state under WORK_DIR/prefect); when every
    stage is already built it only points LATEST at the version. Logs go to stderr; the published
    version's path is the last line on stdout.
    """
    with reported_errors("colorfeat"):
        parameters = _rebuild_parameters(
            source, store, work_dir, limit, image_size, backbone, layer, weights, device,
            batch_size, embeddings, workers, dask_address, seed, precision,
        )  # fmt: skip
        if dry_run:
            from flows.local import dry_run_report

            typer.echo("\n".join(dry_run_report(parameters)))
            return
        from flows.local import run_rebuild

        summary = run_rebuild(parameters)
    typer.echo(summary["path"])


@app.command(**COMMAND)
def schedule(
    cron: str = typer.Option(..., help="When to rebuild, e.g. '0 3 * * 1' (Mondays 03:00)."),
    timezone: str = typer.Option(None, help="IANA time zone of the cron expression (UTC)."),
    name: str = typer.Option("weekly-rebuild", help="Deployment name (flow `rebuild`)."),
    source: str = _SOURCE,
    store: str = _STORE,
    work_dir: Path = _WORK_DIR,
    limit: int = _LIMIT,
    image_size: int = _IMAGE_SIZE,
    backbone: str = _BACKBONE,
    layer: str = _LAYER,
    weights: str = _WEIGHTS,
    device: Device = _DEVICE,
    precision: Precision = _PRECISION,
    batch_size: int = _BATCH_SIZE,
    embeddings: str = _EMBEDDINGS,
    workers: int = _WORKERS,
    dask_address: str = _DASK_ADDRESS,
    seed: int = _SEED,
) -> None:
    """Serve the rebuild as a scheduled Prefect deployment until interrupted.

    Needs a Prefect server (PREFECT_API_URL); see docs/operations.md. The run options become the
    deployment's default parameters.
    """
    with reported_errors("colorfeat"):
        parameters = _rebuild_parameters(
            source, store, work_dir, limit, image_size, backbone, layer, weights, device,
            batch_size, embeddings, workers, dask_address, seed, precision,
        )  # fmt: skip
        from flows.deploy import serve_rebuild

        serve_rebuild(cron, parameters, name=name, timezone=timezone)
