"""The acquire stage: any source as a local directory in the COCO layout.

Sources: `synthetic` (generated into the work dir), `coco2014` / `coco2017` (the official archives,
downloaded and verified), an http(s) URL of a mirror with the official layout
(`URL/zips/<split>.zip`, `URL/annotations/annotations_trainval<year>.zip`), or a directory already
in the COCO layout. The result names the directory, its splits and a content identity.

A mirror URL may carry credentials (`https://user:token@host/coco`, or a secret query key such as
`?token=...`): they are used for the requests and redacted (`colorfeat.redact`) in everything
recorded, and the identity and work-dir names depend on the redacted URL only, so the same mirror
with other credentials reuses the same downloads and yields the same store version.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from colorfeat.disk import require_free, unpacked_bytes
from colorfeat.errors import UserError
from colorfeat.hashing import file_sha256, value_hash
from colorfeat.parallel import commit, completed, partial_dir, write_atomic
from colorfeat.redact import MASK, redact_text, redact_url, reveal
from colorfeat.sources import synthetic
from colorfeat.sources.coco import find_splits
from colorfeat.sources.download import (
    Checksum,
    checksums_from_listing,
    download,
    fetch_text,
    official_checksums,
    probe,
    safe_extract,
)

OFFICIAL_BASE = "http://images.cocodataset.org"
OFFICIAL = {"coco2014": "2014", "coco2017": "2017"}
MIRROR_YEARS = ("2017", "2014")
# How a directory source's pictures enter its identity; a new rule gives every such source a new
# identity, hence new stage keys and version ids.
IDENTITY_RULE = "path-size-mtime_ns"


def acquire(
    source: str,
    work_dir: Path,
    *,
    limit: int | None = None,
    seed: int = 0,
    checksums: dict[str, Checksum] | None = None,
    progress: bool = True,
) -> dict:
    """-> {"root": COCO-layout dir, "splits": {coco split: store split}, "identity": str}.

    `limit` sizes a synthetic source; for other sources the captions stage applies it.
    `checksums` replaces the shipped table of official archive sizes and SHA-256s.
    """
    work_dir = Path(work_dir)
    if source == "synthetic":
        return acquire_synthetic(work_dir, limit=limit, seed=seed)
    table = official_checksums() if checksums is None else checksums
    if source in OFFICIAL:
        return acquire_remote(OFFICIAL_BASE, OFFICIAL[source], work_dir, table, progress)
    if source.startswith(("http://", "https://")):
        return acquire_remote(_with_credentials(source), None, work_dir, table, progress)
    path = Path(source).expanduser()
    if path.is_dir():
        return acquire_dir(path)
    raise UserError(
        f"--source must be synthetic, coco2014, coco2017, an http(s) URL or a directory; "
        f"{redact_text(repr(source))} is none of these (no such directory)"
    )


def acquired(
    source: str, work_dir: Path, *, limit: int | None = None, seed: int = 0
) -> dict | None:
    """What `acquire` returns when that needs no download and no generation; otherwise None."""
    work_dir = Path(work_dir)
    if source == "synthetic":
        return completed(_synthetic_dir(work_dir, limit, seed))
    if source in OFFICIAL:
        return completed(_remote_dir(work_dir, OFFICIAL_BASE, OFFICIAL[source]))
    if source.startswith(("http://", "https://")):
        return completed(_remote_dir(work_dir, source.rstrip("/"), None))
    path = Path(source).expanduser()
    return acquire_dir(path) if path.is_dir() else None


def _synthetic_dir(work_dir: Path, limit: int | None, seed: int) -> Path:
    n = synthetic.DEFAULT_LIMIT if limit is None else limit
    spec = {"generator": "synthetic", "version": synthetic.GENERATOR_VERSION, "seed": seed, "n": n}
    return work_dir / "sources" / f"synthetic-{value_hash(spec, 16)}"


def _remote_dir(work_dir: Path, base: str, year: str | None) -> Path:
    """Where a remote source is kept: named by its URL without credentials."""
    return work_dir / "sources" / f"remote-{value_hash([redact_url(base.rstrip('/')), year], 16)}"


def acquire_synthetic(work_dir: Path, *, limit: int | None = None, seed: int = 0) -> dict:
    """Generate (once) the synthetic data set for (seed, limit) under work_dir/sources."""
    out = _synthetic_dir(work_dir, limit, seed)
    if done := completed(out):
        return done
    partial = partial_dir(out)
    synthetic.generate(partial, limit=limit, seed=seed)
    splits = {name: name[: -len("2017")] for name in synthetic.SPLITS}
    result = {"root": str(out), "splits": splits, "identity": out.name}
    return commit(partial, out, result)


def acquire_dir(path: Path) -> dict:
    """A COCO-layout directory as it is; identity from caption files and the picture listing.

    The listing holds every file under each split's directory with its size and modification
    time in nanoseconds (what make and rsync trust), so a picture edited in place changes the
    identity even at the same size; copying the directory with its times (`cp -a`, `rsync -a`)
    keeps it.
    """
    path = path.resolve()
    splits = find_splits(path)
    ident: dict = {"rule": IDENTITY_RULE}
    for name in sorted(splits):
        image_dir = path / name
        listing = _listing(image_dir) if image_dir.is_dir() else []
        ident[name] = {
            "captions": file_sha256(path / "annotations" / f"captions_{name}.json"),
            "images": value_hash(listing),
        }
    return {"root": str(path), "splits": splits, "identity": "dir-" + value_hash(ident, 16)}


def _listing(image_dir: Path) -> list[tuple[str, int | None, int | None]]:
    """(path under image_dir, size, mtime_ns) of every file below it, sorted; links are followed
    (a broken one is (path, None, None)), but never to a directory outside the source root or
    to one already listed. A directory that cannot be listed raises: it must not silently leave
    the identity."""
    root = os.path.realpath(image_dir.parent)
    prefix = len(str(image_dir)) + 1
    seen: set[str] = set()
    out: list[tuple[str, int | None, int | None]] = []
    pending = [str(image_dir)]
    while pending:
        directory = pending.pop()
        real = os.path.realpath(directory)
        if real in seen or os.path.commonpath([root, real]) != root:
            continue
        seen.add(real)
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir():
                    pending.append(entry.path)
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # a broken link
                    out.append((entry.path[prefix:], None, None))
                    continue
                out.append((entry.path[prefix:], st.st_size, st.st_mtime_ns))
    return sorted(out)


def _with_credentials(source: str) -> str:
    """The URL to request: a concealed source's original, which this process must know."""
    url = reveal(source)
    if MASK in url and redact_url(url) == url:  # still masked: the original stayed elsewhere
        raise UserError(
            f"the credentials of {url} are not known to this process: give the URL with them to "
            "`colorfeat run` or `colorfeat schedule`, which keep them out of every record"
        )
    return url


def mirror_url(base: str, rel: str) -> str:
    """The URL of `rel` under a mirror's base URL, keeping the base's query (a signed-URL token)."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{rel}", fragment=""))


def _mirror_year(base: str) -> str:
    for year in MIRROR_YEARS:
        if probe(mirror_url(base, f"annotations/annotations_trainval{year}.zip")):
            return year
    names = " or ".join(f"annotations_trainval{y}.zip" for y in MIRROR_YEARS)
    raise UserError(
        f"{redact_url(base)} is not a COCO mirror (or denies access): no annotations/{names}"
    )


def _expected(name: str, table: dict[str, Checksum], listed: dict[str, Checksum]) -> Checksum:
    official, mirror = table.get(name), listed.get(name)
    if official and mirror and official.sha256 != mirror.sha256:
        raise UserError(f"the mirror's SHA256SUMS disagrees with the official checksum of {name}")
    return official or mirror or Checksum(None, None)


@dataclass(frozen=True)
class _Fetch:
    """Where one remote source's archives come from and go, and what they must hash to."""

    base: str  # the URL requested, credentials included
    shown: str  # the URL recorded: no credentials
    partial: Path
    downloads: Path
    table: dict[str, Checksum]  # the official checksums
    listed: dict[str, Checksum]  # a mirror's own SHA256SUMS
    progress: bool


def _find_mirror(base: str) -> tuple[str, dict[str, Checksum]]:
    """A mirror's year (which annotations archive it has) and its SHA256SUMS, if it has one."""
    year = _mirror_year(base)
    listing = fetch_text(mirror_url(base, "SHA256SUMS"))
    return year, checksums_from_listing(listing) if listing else {}


def _fetch_archive(fetch: _Fetch, rel: str, only: str | None) -> str:
    """Download, verify and extract (members under `only`) one archive, once -> its SHA-256."""
    name = rel.rsplit("/", 1)[1]
    marker = fetch.partial / f".{name}.extracted"
    if marker.is_file():  # verified and extracted by an earlier run
        return json.loads(marker.read_text())["sha256"]
    expected = _expected(name, fetch.table, fetch.listed)
    archive = fetch.downloads / name
    if expected.size:
        require_free(fetch.downloads, expected.size, f"downloading {name}")
    got = download(
        mirror_url(fetch.base, rel),
        archive,
        size=expected.size,
        sha256=expected.sha256,
        progress=fetch.progress,
    )
    require_free(fetch.partial, unpacked_bytes(archive), f"extracting {name}")
    safe_extract(archive, fetch.partial, prefix=only)
    write_atomic(marker, json.dumps({"url": mirror_url(fetch.shown, rel), "sha256": got["sha256"]}))
    archive.unlink()
    return got["sha256"]


def acquire_remote(
    base: str,
    year: str | None,
    work_dir: Path,
    table: dict[str, Checksum],
    progress: bool = True,
) -> dict:
    """Download, verify and extract a year's archives (each archive once) under work_dir.

    `year` None means a mirror: its year is found by asking which annotations archive it has,
    and an optional `SHA256SUMS` listing at its root is checked too.
    """
    shown = redact_url(base.rstrip("/"))  # what names and records the source: no credentials
    out = _remote_dir(work_dir, base, year)
    if done := completed(out):
        return done
    listed: dict[str, Checksum] = {}
    if year is None:
        year, listed = _find_mirror(base)
    partial = partial_dir(out)
    downloads = work_dir / "downloads" / value_hash(shown, 8)
    fetch = _Fetch(base, shown, partial, downloads, table, listed, progress)
    archives = {
        f"zips/train{year}.zip": None,
        f"zips/val{year}.zip": None,
        f"annotations/annotations_trainval{year}.zip": "annotations/captions_",
    }
    shas = {
        rel.rsplit("/", 1)[1]: _fetch_archive(fetch, rel, only) for rel, only in archives.items()
    }
    splits = {f"train{year}": "train", f"val{year}": "val"}
    result = {"root": str(out), "splits": splits, "identity": f"coco{year}-" + value_hash(shas, 16)}
    return commit(partial, out, result)
