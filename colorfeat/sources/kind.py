"""What a kind of source is: the `SourceKind` entry of the registry (`colorfeat.sources`).

Also what an entry's functions take (`Request`) and what a source costs before the stages
(`SourceEstimate`). Each kind's module builds one `KIND` from these.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colorfeat.parallel import completed


@dataclass(frozen=True)
class Request:
    """What acquiring a source may depend on besides its `--source` value."""

    work_dir: Path
    limit: int | None = None  # sizes a generated source; the captions stage applies it to others
    seed: int = 0
    checksums: Mapping[str, Any] | None = None  # replaces the shipped table of official archives
    progress: bool = True

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
    - `label` and `help`: how errors name it ("an http(s) URL") and its `--source` help line.
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
