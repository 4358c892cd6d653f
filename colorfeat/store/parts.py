"""What a stage adds to a version: a `Part`, declared in the stage's row of the table.

A part names the arrays it adds (`colorfeat.store.schema.ArraySpec`s), writes them into the
version being assembled (`Build`) and may check more than their dtype, rank, rows and attrs
(`Check`, run when the version is published). Publishing hands the parts of the table's rows to
`colorfeat.store.publish`, which records each part's specs in the version (root attr `parts`),
so validation and `store info` of a published version iterate what it holds; none of them names
a stage.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from colorfeat.errors import UserError
from colorfeat.parallel import is_stray
from colorfeat.store.layout import walk_files
from colorfeat.store.schema import ATTR_SPLITS, ArraySpec


@dataclass
class Build:
    """A version being assembled at `path`: its group, and the root attrs the parts added so far."""

    path: Path
    group: zarr.Group
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def splits(self) -> list[str]:
        return list(self.attrs.get(ATTR_SPLITS) or [])

    def link(self, src: Path, rel: str) -> None:
        """Hardlink the files of a zarr node at `src` to `rel` in the version (copy across file
        systems), leaving out stray files (a killed write's temps, NFS `.nfs*` files)."""
        src, dst = Path(src), self.path / rel
        if not (src / "zarr.json").is_file():
            raise UserError(f"stage output is not a zarr node: {src}")
        for parent in Path(rel).parents:  # every group above it must be a zarr group
            if str(parent) != ".":
                self.group.require_group(parent.as_posix())
        link_tree(src, dst)

    def table(self, spec: ArraySpec, data: np.ndarray, **attrs: Any) -> zarr.Array:
        """Write a small version-wide table of `spec` from `data`, in one chunk."""
        if spec.dtype == "str":
            arr = self.group.create_array(spec.path, shape=data.shape, dtype=str, chunks=data.shape)
            arr[:] = np.asarray(data, dtype=str)
        else:
            arr = self.group.create_array(spec.path, data=np.asarray(data, dtype=spec.dtype))
        arr.attrs.update(attrs)
        return arr


@dataclass
class Check:
    """A version under validation: its group and root attrs; `need` raises one line."""

    group: zarr.Group
    attrs: dict[str, Any]
    where: str

    @property
    def splits(self) -> list[str]:
        return list(self.attrs.get(ATTR_SPLITS) or [])

    def need(self, ok: bool, what: str) -> None:
        if not ok:
            raise UserError(f"invalid store version {self.where}: {what}")


Write = Callable[[Build, Sequence[dict]], None]


@dataclass(frozen=True)
class Part:
    """What one stage adds to a version; `write` gets every result of the rows that share it."""

    name: str
    write: Write
    arrays: tuple[ArraySpec, ...] = ()
    check: Callable[[Check], None] | None = None
    listed: Callable[[Sequence[dict]], dict] | None = None  # root attrs known before writing


def link_tree(src: Path, dst: Path) -> None:
    """Hardlink every file under `src` into `dst` (copy across devices); skip stray files."""
    for name in walk_files(src):
        path = src / name
        if is_stray(path.name):
            continue
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)


def linked_split_arrays(*specs: ArraySpec, key: str = "path") -> Write:
    """A `write` for a stage whose output is a zarr group laid out as the version: each spec's
    `<split>/<path>` under `result[key]` is linked into the version, for every split."""

    def write(build: Build, results: Sequence[dict]) -> None:
        for result in results:
            for split in build.splits:
                for spec in specs:
                    build.link(Path(result[key]) / spec.where(split), spec.where(split))

    return write


def table_from_npy(spec: ArraySpec, key: str = "path") -> Write:
    """A `write` for a stage that saved one version-wide table as `.npy` at `result[key]`."""

    def write(build: Build, results: Sequence[dict]) -> None:
        for result in results:
            build.table(spec, np.load(result[key], allow_pickle=False))

    return write


def grouped(parts: Sequence[tuple[Part, Mapping]]) -> list[tuple[Part, list[dict]]]:
    """(part, its results) pairs merged by part name, in first-seen order."""
    out: dict[str, tuple[Part, list[dict]]] = {}
    for part, result in parts:
        out.setdefault(part.name, (part, []))[1].append(dict(result))
    return list(out.values())
