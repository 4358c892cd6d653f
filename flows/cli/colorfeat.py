"""The `colorfeat` command: rebuild the feature store, inspect it, schedule rebuilds."""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import get_args

import typer
from typer._click.exceptions import UsageError
from typer.core import TyperCommand, TyperGroup

from colorfeat.errors import UserError
from flows.cli.errors import reported_errors

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
                param._usage_display_name = _usage_name(param)  # ROOT, not {ROOT}; IMAGE...

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

    def get_params(self, ctx: typer.Context) -> list:
        """The group's options, --install-completion included, with flags shown without <bool>."""
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


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


def _usage_name(param) -> Callable[[], str]:  # noqa: ANN001 (a Typer argument)
    """How an argument reads in the usage line: its name, with `...` when it takes several."""
    return lambda: param.display_name_raw + ("..." if param.nargs == -1 else "")


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


@store_app.command("verify", **COMMAND)
def store_verify(
    path: str = typer.Argument(..., help="A store root (follows LATEST) or one version."),
    version: str = typer.Argument(None, help="A version id under the root PATH."),
) -> None:
    """Check every chunk of a version against its manifest (size and checksum).

    Prints one line per problem and exits 1 if there is any.
    """
    from colorfeat.store import verify

    with reported_errors("colorfeat"):
        found = verify(path, version)
        for problem in found.problems:
            typer.echo(f"colorfeat: {problem}", err=True)
        state = "ok" if found.ok else f"{len(found.problems)} problems"
        typer.echo(f"{found.version}: {found.files} files, {found.bytes} bytes: {state}")
    if not found.ok:
        raise typer.Exit(1)


@store_app.command("pin", **COMMAND)
def store_pin(
    root: str = typer.Argument(..., help="A store root."),
    version: str = typer.Argument(..., help="The version id to keep."),
) -> None:
    """Keep a version whatever its age or rank: `store gc` never removes it."""
    from colorfeat.store import pin

    with reported_errors("colorfeat"):
        pin(root, version)
        typer.echo(f"pinned {version}")


@store_app.command("unpin", **COMMAND)
def store_unpin(
    root: str = typer.Argument(..., help="A store root."),
    version: str = typer.Argument(..., help="The version id to let go."),
) -> None:
    """Let `store gc` consider a pinned version again."""
    from colorfeat.store import unpin

    with reported_errors("colorfeat"):
        was = unpin(root, version)
        typer.echo(f"unpinned {version}" if was else f"{version} was not pinned")


@store_app.command("gc", **COMMAND)
def store_gc(
    root: str = typer.Argument(..., help="A store root."),
    work_dir: Path = typer.Option(
        None, help="Also remove the stage outputs no kept version needs."
    ),
    keep_last: int = typer.Option(None, min=0, help="Keep the newest N versions."),
    keep_days: float = typer.Option(None, min=0, help="Keep the versions younger than D days."),
    grace_hours: float = typer.Option(
        24.0, min=0, help="Keep a version this long after it stopped being LATEST."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; remove nothing."),
) -> None:
    """Remove old versions: never LATEST, a pinned one, or one within readers' grace period.

    A version is kept if any rule keeps it (the newest --keep-last, those younger than
    --keep-days); give at least one. See docs/operations.md.
    """
    from colorfeat.store import gc

    with reported_errors("colorfeat"):
        if keep_last is None and keep_days is None:
            raise UserError("store gc needs --keep-last N or --keep-days D (or both)")
        found = gc(
            root, keep_last=keep_last, keep_days=keep_days, work_dir=work_dir, dry_run=dry_run,
            grace_s=grace_hours * 3600,
        )  # fmt: skip
        typer.echo("\n".join(found.lines()))


# --------------------------------------------------------------------------- run and schedule
# The options of a rebuild, shared by `run` and `schedule`, are PipelineConfig's fields
# (colorfeat.config.rebuild_options); the commands run in the application layer (flows/).
def _rebuild_parameters() -> list[inspect.Parameter]:
    """Typer parameters of the rebuild options: names, types, defaults and help from the config."""
    from colorfeat.config import rebuild_options

    params = []
    for opt in rebuild_options():
        plain = opt.type in (str, int, float)
        kind = opt.type if plain else (int if int in get_args(opt.type) else str)
        default = opt.default
        if opt.choices:
            kind = StrEnum(opt.name.title().replace("_", ""), {c: c for c in opt.choices})
            default = kind(opt.default)
        elif opt.path:
            kind, default = Path, Path(opt.default)
        if opt.multiple:
            kind, default = list[kind], [default]
        info = typer.Option(... if opt.required else default, help=opt.help, min=opt.min)
        params.append(inspect.Parameter(opt.name, KEYWORD, default=info, annotation=kind))
    return params


KEYWORD = inspect.Parameter.KEYWORD_ONLY


def _with_rebuild_options(*, own_first: bool) -> Callable[[Callable], Callable]:
    """Give `command(own options, **rebuild options)` the rebuild options, around its own."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [p.replace(kind=KEYWORD) for p in inspect.signature(command).parameters.values()]
        rebuild = _rebuild_parameters()
        params = own[:-1] + rebuild if own_first else rebuild + own[:-1]
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _plain(options: dict) -> dict:
    """Option values as the config takes them: enum members as their strings, paths as text."""
    return {
        k: v.value if isinstance(v, StrEnum) else str(v) if isinstance(v, Path) else v
        for k, v in options.items()
    }


@app.command(**COMMAND)
@_with_rebuild_options(own_first=False)
def run(
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print each stage's plan, download size, disk and time needed; do nothing.",
    ),
    **options: object,
) -> None:
    """Rebuild the feature store and publish a version (or reuse the identical one).

    Runs the Prefect rebuild flow with an embedded API (state under WORK_DIR/prefect); when every
    stage is already built it only points LATEST at the version. Logs go to stderr; the published
    version's path is the last line on stdout.
    """
    with reported_errors("colorfeat"):
        from flows.local import run_command

        lines = run_command(_plain(options), dry_run=dry_run)
    typer.echo("\n".join(lines))


@app.command(**COMMAND)
@_with_rebuild_options(own_first=True)
def schedule(
    cron: str = typer.Option(..., help="When to rebuild, e.g. '0 3 * * 1' (Mondays 03:00)."),
    timezone: str = typer.Option(None, help="IANA time zone of the cron expression (UTC)."),
    name: str = typer.Option("weekly-rebuild", help="Deployment name (flow `rebuild`)."),
    keep_last: int = typer.Option(None, min=0, help="After each rebuild: store gc --keep-last."),
    keep_days: float = typer.Option(None, min=0, help="After each rebuild: store gc --keep-days."),
    **options: object,
) -> None:
    """Serve the rebuild as a scheduled Prefect deployment until interrupted.

    Needs a Prefect server (PREFECT_API_URL); see docs/operations.md. The run options become the
    deployment's default parameters.
    """
    with reported_errors("colorfeat"):
        from flows.deploy import schedule_command

        retention = {"keep_last": keep_last, "keep_days": keep_days}
        schedule_command(cron, _plain(options), name=name, timezone=timezone, retention=retention)
