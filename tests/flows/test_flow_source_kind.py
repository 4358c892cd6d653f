"""A kind of source added from this file alone: `colorfeat run` and its dry run accept it."""

from __future__ import annotations

from pathlib import Path

import zarr
from typer.testing import CliRunner

from colorfeat.parallel import commit, completed, partial_dir
from colorfeat.sources import Request, SourceEstimate, SourceKind, registered
from flows.cli.colorfeat import app as colorfeat_app
from flows.local import run_command
from tests.colorfeat.conftest import colour_picture, jpeg_bytes, write_coco
from tests.flows.conftest import TINY

PICTURES = {"train2014": 6, "val2014": 2}


def _cache_name(source: str, request: Request) -> str:
    return f"checkerboard-{request.seed}"


def _acquire(source: str, request: Request) -> dict:
    """Eight colourful pictures with a caption each, written once into the work dir."""
    out = request.sources_dir / _cache_name(source, request)
    if done := completed(out):
        return done
    partial = partial_dir(out)
    for split, n in PICTURES.items():
        names = [f"{split}-{i}.jpg" for i in range(n)]
        pictures = {name: jpeg_bytes(colour_picture(i)) for i, name in enumerate(names)}
        write_coco(partial, split, pictures, {name: [f"a red and {name} thing"] for name in names})
    result = {"root": str(out), "splits": {"train2014": "train", "val2014": "val"}}
    return commit(partial, out, {**result, "identity": out.name})


CHECKERBOARD = SourceKind(
    name="checkerboard",
    label="checkerboard",
    help="checkerboard: eight pictures made on the spot",
    names=("checkerboard",),
    cache_name=_cache_name,
    acquire=_acquire,
    estimate=lambda source, acquired, request: SourceEstimate(sum(PICTURES.values())),
)


def _options(tmp_path: Path) -> dict:
    where = {"store": str(tmp_path / "store"), "work_dir": str(tmp_path / "work")}
    return {**TINY, "source": "checkerboard", "limit": None, **where}


def _dry_run(tmp_path: Path):
    """`colorfeat run ... --dry-run`, parsed by the command itself."""
    args = ["run", "--dry-run"]
    for name, value in _options(tmp_path).items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return CliRunner().invoke(colorfeat_app, args)


def test_a_kind_registered_here_is_planned_built_and_published(tmp_path, capfd):
    with registered(CHECKERBOARD):
        plan = _dry_run(tmp_path)
        assert plan.exit_code == 0, plan.stderr
        assert "source checkerboard: 8 pictures" in plan.stdout
        assert "download: 0 B" in plan.stdout
        # What `colorfeat run` calls once its options are parsed (the flow needs real file
        # descriptors, which the command runner does not give).
        lines = run_command(_options(tmp_path))
    assert "the source is not ready yet" in capfd.readouterr().err
    version = Path(lines[-1])
    group = zarr.open_group(str(version), mode="r")
    assert group["train/image_id"].shape == (6,) and group["val/image_id"].shape == (2,)
    assert group.attrs["source"]["kind"] == "checkerboard"  # recorded from the registry
    assert (tmp_path / "work" / "sources" / "checkerboard-0" / "_SUCCESS").is_file()
    gone = _dry_run(tmp_path)  # out of the registry again
    assert gone.exit_code == 1 and "'checkerboard' is none of these" in gone.stderr
