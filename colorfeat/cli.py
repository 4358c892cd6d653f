"""The `colorfeat` command: rebuild the feature store, inspect it, schedule rebuilds."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from colorfeat.errors import reported_errors

app = typer.Typer(
    help="Build and inspect the versioned Zarr feature store for learning to colour from language.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
store_app = typer.Typer(help="Inspect a feature store.", no_args_is_help=True)
app.add_typer(store_app, name="store")


class WeightsChoice(StrEnum):
    imagenet = "imagenet"
    none = "none"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@app.command()
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


@store_app.command("info")
def store_info(
    path: str = typer.Argument(..., help="A store root (follows LATEST) or one version."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe one store version: splits, arrays, shapes, chunks, codecs and attrs."""
    from colorfeat.store import describe_version, open_store, render_info

    with reported_errors("colorfeat"):
        info = describe_version(open_store(path))
        typer.echo(json.dumps(info, indent=2, sort_keys=True) if as_json else render_info(info))


@store_app.command("ls")
def store_ls(root: str = typer.Argument(..., help="A store root.")) -> None:
    """List the versions of a store root: which is LATEST, sizes, created time."""
    from colorfeat.store import list_versions, render_versions

    with reported_errors("colorfeat"):
        typer.echo(render_versions(list_versions(root)))
