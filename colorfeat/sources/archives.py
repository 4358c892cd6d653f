"""Downloading a year of COCO's archives from a base URL into a COCO-layout directory.

Shared by the `official` and `mirror` source kinds: `URL/zips/train<year>.zip`,
`URL/zips/val<year>.zip` and `URL/annotations/annotations_trainval<year>.zip`, each downloaded
(resumably), checked against its size and SHA-256 (`colorfeat.sources.download`), extracted safely
(only the caption files of the annotations archive) and deleted, once. The result's identity
hashes the archives' SHA-256s, so the same archives from any URL give the same identity.

A URL may carry credentials (`https://user:token@host/coco`, or a secret query key such as
`?token=...`): they are used for the requests and redacted (`colorfeat.redact`) in everything
recorded, and the work-dir names depend on the redacted URL only, so the same mirror with other
credentials reuses the same downloads and yields the same store version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from colorfeat.disk import require_free, unpacked_bytes
from colorfeat.errors import UserError
from colorfeat.hashing import value_hash
from colorfeat.parallel import commit, completed, partial_dir, write_atomic
from colorfeat.redact import MASK, redact_url, reveal
from colorfeat.sources.download import (
    Checksum,
    checksums_from_listing,
    download,
    fetch_text,
    official_checksums,
    probe,
    safe_extract,
)
from colorfeat.sources.kind import Request

MIRROR_YEARS = ("2017", "2014")


def archive_names(year: str) -> dict[str, str | None]:
    """{archive path under the base URL: the members to extract (a name prefix; None: all)}."""
    return {
        f"zips/train{year}.zip": None,
        f"zips/val{year}.zip": None,
        f"annotations/annotations_trainval{year}.zip": "annotations/captions_",
    }


def cache_name(base: str, year: str | None) -> str:
    """The name a remote source is kept under in WORK/sources: from its URL without credentials."""
    return f"remote-{value_hash([redact_url(base.rstrip('/')), year], 16)}"


def with_credentials(source: str) -> str:
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


def acquire_remote(base: str, year: str | None, request: Request) -> dict:
    """Download, verify and extract a year's archives (each archive once) under the work dir.

    `year` None means a mirror: its year is found by asking which annotations archive it has,
    and an optional `SHA256SUMS` listing at its root is checked too. Sizes and SHA-256s come
    from `request.checksums`, by default the shipped table of the official archives.
    """
    table = dict(official_checksums() if request.checksums is None else request.checksums)
    shown = redact_url(base.rstrip("/"))  # what names and records the source: no credentials
    out = request.sources_dir / cache_name(base, year)
    if done := completed(out):
        return done
    listed: dict[str, Checksum] = {}
    if year is None:
        year, listed = _find_mirror(base)
    partial = partial_dir(out)
    downloads = Path(request.work_dir) / "downloads" / value_hash(shown, 8)
    fetch = _Fetch(base, shown, partial, downloads, table, listed, request.progress)
    shas = {
        rel.rsplit("/", 1)[1]: _fetch_archive(fetch, rel, only)
        for rel, only in archive_names(year).items()
    }
    splits = {f"train{year}": "train", f"val{year}": "val"}
    result = {"root": str(out), "splits": splits, "identity": f"coco{year}-" + value_hash(shas, 16)}
    return commit(partial, out, result)
