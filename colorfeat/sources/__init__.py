"""The source registry: every kind of `--source`, and the acquire stage that reads one.

`acquire(source, work_dir)` gives any source as a directory in the COCO layout:
{"root": dir, "splits": {source split: store split}, "identity": str}, where the identity names
the content (every stage key hashes it, so the same content gives the same store version).

Each kind of source is one `SourceKind` entry in a module of its own: `generated` (synthetic),
`official` (coco2014, coco2017), `karpathy` (a Karpathy split file), `table` (a caption table),
`webdataset` (tar shards), `mirror` (an http(s) URL) and `directory` (a COCO-layout directory);
the kinds that are not in the COCO layout are written into it under the work dir (`layout`).
The entry says how a `--source` value is recognised, where its acquired copy is cached in the
work dir, how it is acquired, what is ready without work, how it is checked before a run, what
it costs for the dry run, and its line of `--source` help. Everything that consumes sources (the
acquire stage, the planner, the dry run, the `--source` help and errors) iterates `KINDS`, so
adding a kind is its module and one line below, or `registered(kind)`. Acquire results of the
converted kinds also carry "counts": the pictures per split and what was skipped, by reason.
How a source is read besides its value (`--image-column`, `--val-fraction`...) is one
`SourceOptions`; each kind names the options it reads, and `check` refuses any other.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from colorfeat.errors import UserError
from colorfeat.redact import redact_text
from colorfeat.sources import (
    directory,
    generated,
    karpathy,
    mirror,
    official,
    table,
    webdataset,
)  # fmt: skip
from colorfeat.sources.kind import Request, SourceEstimate, SourceKind, SourceOptions

__all__ = [
    "KINDS", "Request", "SourceEstimate", "SourceKind", "SourceOptions", "acquire", "acquired",
    "check", "estimate", "kind_of", "registered", "source_help",
]  # fmt: skip


# Order matters: the first kind that recognises a value takes it; a directory comes last.
KINDS: list[SourceKind] = [
    generated.KIND, official.KIND, karpathy.KIND, table.KIND, webdataset.KIND, mirror.KIND,
    directory.KIND,
]  # fmt: skip


@contextmanager
def registered(kind: SourceKind) -> Iterator[SourceKind]:
    """`kind` in the registry, ahead of the others, for the duration of the block."""
    KINDS.insert(0, kind)
    try:
        yield kind
    finally:
        KINDS.remove(kind)


def kind_of(source: str) -> SourceKind:
    """The kind of source `source` is; one UserError listing the kinds if it is none."""
    for kind in KINDS:
        if kind.takes(source):
            return kind
    names = [name for kind in KINDS for name in kind.names]
    close = difflib.get_close_matches(source, names, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    hint += " (no such directory)" if not close and "://" not in source else ""
    raise UserError(
        f"--source must be {_labels()}; {redact_text(repr(source))} is none of these{hint}"
    )


def _labels() -> str:
    labels = [kind.label for kind in KINDS]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]


def source_help() -> str:
    """The `--source` help: one line per kind, in the order they are recognised."""
    return "; ".join(kind.help for kind in KINDS) + "."


def _request(
    work_dir: str | Path, limit: int | None, seed: int, options: SourceOptions | None, **more: Any
) -> Request:
    return Request(Path(work_dir), limit, seed, options=options or SourceOptions(), **more)


def acquire(
    source: str,
    work_dir: str | Path,
    *,
    limit: int | None = None,
    seed: int = 0,
    checksums: Mapping[str, Any] | None = None,
    progress: bool = True,
    options: SourceOptions | None = None,
) -> dict:
    """-> {"root": COCO-layout dir, "splits": {source split: store split}, "identity": str}.

    `limit` sizes a generated source; for other sources the captions stage applies it.
    `checksums` replaces the shipped table of official archive sizes and SHA-256s.
    """
    request = _request(work_dir, limit, seed, options, checksums=checksums, progress=progress)
    return kind_of(source).acquire(source, request)


def acquired(
    source: str,
    work_dir: str | Path,
    *,
    limit: int | None = None,
    seed: int = 0,
    options: SourceOptions | None = None,
) -> dict | None:
    """What `acquire` returns when that needs no download and no generation; otherwise None."""
    return kind_of(source).acquired(source, _request(work_dir, limit, seed, options))


def check(source: str, options: SourceOptions | None = None) -> None:
    """Raise UserError, in one line, unless `source` is a kind that can work (before a run) and
    reads every option given."""
    kind = kind_of(source)
    kind.check(source)
    extra = [name for name in (options or SourceOptions()).given() if name not in kind.options]
    if extra:
        flags = ", ".join("--" + name.replace("_", "-") for name in extra)
        verb = "does" if len(extra) == 1 else "do"
        raise UserError(
            f"{flags} {verb} not apply to {kind.label} (--source {redact_text(source)})"
        )


def estimate(
    source: str,
    acquired: dict | None,
    *,
    limit: int | None = None,
    seed: int = 0,
    options: SourceOptions | None = None,
) -> SourceEstimate:
    """Pictures, download, generation time and disk of a source, for the dry run.

    `acquired` is what `acquired()` returned (None: not ready). No work dir is needed: an
    estimate reads only what `acquired` names and shipped tables.
    """
    return kind_of(source).estimate(source, acquired, _request(".", limit, seed, options))
