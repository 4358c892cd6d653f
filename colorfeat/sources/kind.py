"""What a kind of source is: the `SourceKind` entry of the registry (`colorfeat.sources`).

Also what an entry's functions take (`Request`, with the `SourceOptions` of the run) and what a
source costs before the stages (`SourceEstimate`). Each kind's module builds one `KIND` from these.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from colorfeat.errors import UserError
from colorfeat.parallel import completed

VAL_FRACTION = 0.2  # the share of pictures held out for val where a source names no split


@dataclass(frozen=True)
class SourceOptions:
    """How a source is read besides its `--source` value: the `colorfeat run` options that a kind
    may take (`SourceKind.options` names those it takes). The defaults read every source as it
    was always read, so they are left out of its identity; a value given goes into the identity
    of the kinds it changes, so a changed column never reuses the copy read with the old one.
    """

    image_column: str | None = None  # None: found by its usual names
    caption_column: str | None = None
    split_column: str | None = None  # None: a column named `split`, else by --val-fraction
    image_root: str | None = None  # None: the table's folder
    val_fraction: float = VAL_FRACTION

    def __post_init__(self) -> None:
        try:  # one number whichever way it came (0 from a YAML file, 0.0 from the command line)
            object.__setattr__(self, "val_fraction", float(self.val_fraction))
        except (TypeError, ValueError):
            raise UserError(f"--val-fraction must be a number, got {self.val_fraction!r}") from None
        if not 0 <= self.val_fraction < 1:
            raise UserError(
                f"--val-fraction must be at least 0 and below 1, got {self.val_fraction}"
            )
        for name in ("image_column", "caption_column", "split_column", "image_root"):
            if getattr(self, name) == "":
                raise UserError(f"--{name.replace('_', '-')} must not be empty")

    def given(self, among: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The options (`among` these names) set to something other than their default."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != f.default and (among is None or f.name in among)
        }


@dataclass(frozen=True)
class Request:
    """What acquiring a source may depend on besides its `--source` value."""

    work_dir: Path
    limit: int | None = None  # sizes a generated source; the captions stage applies it to others
    seed: int = 0
    checksums: Mapping[str, Any] | None = None  # replaces the shipped table of official archives
    progress: bool = True
    options: SourceOptions = SourceOptions()

    @property
    def sources_dir(self) -> Path:
        """Where acquired copies are cached: WORK/sources/<cache name>."""
        return Path(self.work_dir) / "sources"


@dataclass(frozen=True)
class SourceEstimate:
    """What a source costs before the stages: for the dry run.

    `pictures` and `download_bytes` are None where unknown before acquiring (a mirror);
    `generate_s` and `generate_bytes` are the time and disk a generated source still needs.
    """

    pictures: int | None
    download_bytes: int | None = 0
    generate_s: float = 0.0
    generate_bytes: int = 0


def _accepts(source: str) -> None:
    """The check of a kind that needs none before a run."""


@dataclass(frozen=True)
class SourceKind:
    """One kind of source, everything about it in one place.

    - `names`: the literal `--source` values it takes (also offered as "did you mean");
    - `recognises(source)`: whether a value is this kind (default: one of `names`);
    - `cache_name(source, request)`: its identity for caching, the name of its acquired copy
      under WORK/sources (no credentials in it), or None for a source read where it is;
    - `acquire(source, request)`: the COCO-layout result (see the module doc);
    - `ready(source, request)`: a source read where it is: its result when that needs no work,
      else None (a cached kind is ready when its copy under WORK/sources is complete);
    - `check(source)`: raise UserError before a run for a value that cannot work;
    - `estimate(source, acquired, request)`: its `SourceEstimate`, `acquired` being what
      `acquired()` returned;
    - `label` and `help`: how errors name it ("an http(s) URL") and its `--source` help line;
    - `options`: the `SourceOptions` fields it reads (any other given is an error before a run).
    """

    name: str
    label: str
    help: str
    acquire: Callable[[str, Request], dict]
    estimate: Callable[[str, dict | None, Request], SourceEstimate]
    names: tuple[str, ...] = ()
    recognises: Callable[[str], bool] | None = None
    cache_name: Callable[[str, Request], str | None] = field(default=lambda source, request: None)
    ready: Callable[[str, Request], dict | None] | None = None
    check: Callable[[str], None] = _accepts
    options: tuple[str, ...] = ()

    def takes(self, source: str) -> bool:
        """Whether `--source source` is this kind."""
        return self.recognises(source) if self.recognises else source in self.names

    def acquired(self, source: str, request: Request) -> dict | None:
        """Its acquire result when that needs no download and no generation; else None."""
        name = self.cache_name(source, request)
        if name is not None:
            return completed(request.sources_dir / name)
        return self.ready(source, request) if self.ready else None


def capped(pictures: int | None, limit: int | None) -> int | None:
    """How many of `pictures` a run with `--limit limit` reads (None: unknown)."""
    if pictures is None:
        return limit
    return min(pictures, limit) if limit else pictures


def count_pictures(acquired: dict) -> int:
    """The files directly in each split's folder of an acquired COCO-layout source."""
    root = Path(acquired["root"])
    total = 0
    for split in acquired["splits"]:
        if (root / split).is_dir():
            with os.scandir(root / split) as entries:
                total += sum(1 for e in entries if e.is_file())
    return total
