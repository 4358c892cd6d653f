"""The acquire stage: any source as a local directory in the COCO layout.

Sources: `synthetic` (generated into the work dir), `coco2014` / `coco2017` (the official archives,
downloaded and verified), an http(s) URL of a mirror with the official layout
(`URL/zips/<split>.zip`, `URL/annotations/annotations_trainval<year>.zip`), or a directory already
in the COCO layout. The result names the directory, its splits and a content identity.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from colorfeat import synthetic
from colorfeat.coco import find_splits
from colorfeat.download import (
    Checksum,
    checksums_from_listing,
    download,
    fetch_text,
    official_checksums,
    probe,
    safe_extract,
)
from colorfeat.errors import UserError
from colorfeat.hashing import file_sha256, value_hash
from colorfeat.parallel import commit, completed, partial_dir, write_atomic

OFFICIAL_BASE = "http://images.cocodataset.org"
OFFICIAL = {"coco2014": "2014", "coco2017": "2017"}
MIRROR_YEARS = ("2017", "2014")


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
        base = source.rstrip("/")
        return acquire_remote(base, None, work_dir, table, progress)
    path = Path(source).expanduser()
    if path.is_dir():
        return acquire_dir(path)
    raise UserError(
        f"--source must be synthetic, coco2014, coco2017, an http(s) URL or a directory; "
        f"{source!r} is none of these (no such directory)"
    )


def acquire_synthetic(work_dir: Path, *, limit: int | None = None, seed: int = 0) -> dict:
    """Generate (once) the synthetic data set for (seed, limit) under work_dir/sources."""
    n = synthetic.DEFAULT_LIMIT if limit is None else limit
    spec = {"generator": "synthetic", "version": synthetic.GENERATOR_VERSION, "seed": seed, "n": n}
    out = work_dir / "sources" / f"synthetic-{value_hash(spec, 16)}"
    if done := completed(out):
        return done
    partial = partial_dir(out)
    synthetic.generate(partial, limit=n, seed=seed)
    splits = {name: name[: -len("2017")] for name in synthetic.SPLITS}
    result = {"root": str(out), "splits": splits, "identity": "synthetic-" + value_hash(spec, 16)}
    return commit(partial, out, result)


def acquire_dir(path: Path) -> dict:
    """A COCO-layout directory as it is; identity from caption files and the picture listing."""
    path = path.resolve()
    splits = find_splits(path)
    ident: dict = {}
    for name in sorted(splits):
        listing = []
        image_dir = path / name
        if image_dir.is_dir():
            with os.scandir(image_dir) as it:
                listing = sorted((e.name, e.stat().st_size) for e in it if e.is_file())
        ident[name] = {
            "captions": file_sha256(path / "annotations" / f"captions_{name}.json"),
            "images": value_hash(listing),
        }
    return {"root": str(path), "splits": splits, "identity": "dir-" + value_hash(ident, 16)}


def _mirror_year(base: str) -> str:
    for year in MIRROR_YEARS:
        if probe(f"{base}/annotations/annotations_trainval{year}.zip"):
            return year
    names = " or ".join(f"annotations_trainval{y}.zip" for y in MIRROR_YEARS)
    raise UserError(f"{base} is not a COCO mirror: no annotations/{names}")


def _expected(name: str, table: dict[str, Checksum], listed: dict[str, Checksum]) -> Checksum:
    official, mirror = table.get(name), listed.get(name)
    if official and mirror and official.sha256 != mirror.sha256:
        raise UserError(f"the mirror's SHA256SUMS disagrees with the official checksum of {name}")
    return official or mirror or Checksum(None, None)


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
    out = work_dir / "sources" / f"remote-{value_hash([base, year], 16)}"
    if done := completed(out):
        return done
    listed: dict[str, Checksum] = {}
    if year is None:  # a mirror: find its year, and use its SHA256SUMS if it has one
        year = _mirror_year(base)
        listing = fetch_text(f"{base}/SHA256SUMS")
        listed = checksums_from_listing(listing) if listing else {}
    partial = partial_dir(out)
    downloads = work_dir / "downloads" / value_hash(base, 8)
    archives = {
        f"zips/train{year}.zip": None,
        f"zips/val{year}.zip": None,
        f"annotations/annotations_trainval{year}.zip": "annotations/captions_",
    }
    shas: dict[str, str] = {}
    for rel, only in archives.items():
        name = rel.rsplit("/", 1)[1]
        marker = partial / f".{name}.extracted"
        if marker.is_file():  # verified and extracted by an earlier run
            shas[name] = json.loads(marker.read_text())["sha256"]
            continue
        expected = _expected(name, table, listed)
        got = download(
            f"{base}/{rel}",
            downloads / name,
            size=expected.size,
            sha256=expected.sha256,
            progress=progress,
        )
        safe_extract(downloads / name, partial, prefix=only)
        shas[name] = got["sha256"]
        write_atomic(marker, json.dumps({"url": f"{base}/{rel}", "sha256": got["sha256"]}))
        (downloads / name).unlink()
    splits = {f"train{year}": "train", f"val{year}": "val"}
    result = {"root": str(out), "splits": splits, "identity": f"coco{year}-" + value_hash(shas, 16)}
    return commit(partial, out, result)
