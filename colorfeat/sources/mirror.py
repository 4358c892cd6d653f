"""The `mirror` source kind: `--source https://host/coco`, a mirror of COCO's official layout.

`URL/zips/<split>.zip` and `URL/annotations/annotations_trainval<year>.zip`; the year is the one
whose annotations archive the mirror has, and an optional `URL/SHA256SUMS` is checked too
(`colorfeat.sources.archives`). Credentials in the URL are used and never recorded.
"""

from __future__ import annotations

from colorfeat.sources.kind import Request, SourceEstimate, SourceKind, capped, count_pictures

SCHEMES = ("http://", "https://")


def _cache_name(source: str, request: Request) -> str:
    from colorfeat.sources.archives import cache_name

    return cache_name(source, None)  # the redacted URL names it: credentials never matter


def _acquire(source: str, request: Request) -> dict:
    from colorfeat.sources.archives import acquire_remote, with_credentials

    return acquire_remote(with_credentials(source), None, request)


def _estimate(source: str, acquired: dict | None, request: Request) -> SourceEstimate:
    """Counted once downloaded; before, the mirror is not asked (a dry run stays offline)."""
    if acquired is not None:
        return SourceEstimate(capped(count_pictures(acquired), request.limit))
    return SourceEstimate(request.limit, download_bytes=None)


KIND = SourceKind(
    name="mirror",
    label="an http(s) URL",
    help="URL: an http(s) mirror of the official layout",
    recognises=lambda source: source.startswith(SCHEMES),
    cache_name=_cache_name,
    acquire=_acquire,
    estimate=_estimate,
)
