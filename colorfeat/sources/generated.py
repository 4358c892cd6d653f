"""The `synthetic` source kind: a COCO-layout data set generated into the work dir.

`--source synthetic` writes `--limit` pictures (default `synthetic.DEFAULT_LIMIT`) of
`--seed` with `colorfeat.sources.synthetic` into WORK/sources/synthetic-<hash of the generator
version, seed and count>, once; from there it is read exactly as a COCO-layout directory is.
"""

from __future__ import annotations

from colorfeat.hashing import value_hash
from colorfeat.parallel import commit, completed, partial_dir
from colorfeat.sources.kind import Request, SourceEstimate, SourceKind

# Wall time and disk of generating one picture with its caption records, measured with
# `colorfeat run --source synthetic --limit 600 --image-size 64 --weights none --device cpu`
# on the 2-core x86-64 VM (the acquire stage: 2.5 s for 600 pictures).
SECONDS_PER_PICTURE = 2.5 / 600
BYTES_PER_PICTURE = 30_000


def _count(request: Request) -> int:
    from colorfeat.sources.synthetic import DEFAULT_LIMIT

    return DEFAULT_LIMIT if request.limit is None else request.limit


def cache_name(source: str, request: Request) -> str:
    """synthetic-<hash>: what was generated is all the identity there is."""
    from colorfeat.sources.synthetic import GENERATOR_VERSION

    spec = {
        "generator": "synthetic",
        "version": GENERATOR_VERSION,
        "seed": request.seed,
        "n": _count(request),
    }
    return f"synthetic-{value_hash(spec, 16)}"


def _acquire(source: str, request: Request) -> dict:
    """Generate (once) the synthetic data set for (seed, limit) under WORK/sources."""
    from colorfeat.sources.synthetic import SPLITS, generate

    out = request.sources_dir / cache_name(source, request)
    if done := completed(out):
        return done
    partial = partial_dir(out)
    generate(partial, limit=request.limit, seed=request.seed)
    splits = {name: name[: -len("2017")] for name in SPLITS}
    result = {"root": str(out), "splits": splits, "identity": out.name}
    return commit(partial, out, result)


def _estimate(source: str, acquired: dict | None, request: Request) -> SourceEstimate:
    n = _count(request)
    if acquired is not None:
        return SourceEstimate(n)
    return SourceEstimate(n, 0, n * SECONDS_PER_PICTURE, n * BYTES_PER_PICTURE)


KIND = SourceKind(
    name="synthetic",
    label="synthetic",
    help="synthetic: generated coloured shapes with captions (--limit, --seed)",
    names=("synthetic",),
    cache_name=cache_name,
    acquire=_acquire,
    estimate=_estimate,
)
