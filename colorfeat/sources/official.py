"""The `official` source kind: `--source coco2014` / `coco2017`, COCO's own archives.

Downloaded from images.cocodataset.org and checked against the shipped table of their sizes and
SHA-256s (`colorfeat/data/coco_checksums.tsv`) by `colorfeat.sources.archives`; kept in
WORK/sources/remote-<hash of the URL and year>.
"""

from __future__ import annotations

from colorfeat.sources.kind import Request, SourceEstimate, SourceKind, capped, count_pictures

OFFICIAL_BASE = "http://images.cocodataset.org"
YEARS = {"coco2014": "2014", "coco2017": "2017"}
# Pictures in the train and val archives of each year: the dry run's count before a download.
PICTURES = {"coco2014": 82_783 + 40_504, "coco2017": 118_287 + 5_000}


def _cache_name(source: str, request: Request) -> str:
    from colorfeat.sources.archives import cache_name

    return cache_name(OFFICIAL_BASE, YEARS[source])


def _acquire(source: str, request: Request) -> dict:
    from colorfeat.sources.archives import acquire_remote

    return acquire_remote(OFFICIAL_BASE, YEARS[source], request)


def _estimate(source: str, acquired: dict | None, request: Request) -> SourceEstimate:
    if acquired is not None:
        return SourceEstimate(capped(count_pictures(acquired), request.limit))
    from colorfeat.sources.archives import archive_names
    from colorfeat.sources.download import official_checksums

    table = official_checksums()
    names = [rel.rsplit("/", 1)[1] for rel in archive_names(YEARS[source])]
    download = sum(table[name].size or 0 for name in names)
    return SourceEstimate(capped(PICTURES[source], request.limit), download)


KIND = SourceKind(
    name="official",
    label=", ".join(YEARS),
    help=f"{' or '.join(YEARS)}: the official archives, downloaded and checked",
    names=tuple(YEARS),
    cache_name=_cache_name,
    acquire=_acquire,
    estimate=_estimate,
)
