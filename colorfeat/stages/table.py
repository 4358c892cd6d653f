"""The stages of a rebuild, declared once: each row says everything about its stage.

A row (`Stage`) gives the stage's name, its function (which takes the `Context`), the stages it
reads, the slice of the configuration it depends on, its code version, its retries, what it
adds to a version (a `colorfeat.store.parts.Part`: arrays through `colorfeat.store.schema`, how
they are written and checked) and what it costs for the dry run. Every runner iterates `STAGES`
in order: the plain local runner (`colorfeat.stages.runner`), the cache-key planner
(`colorfeat.stages.plan`), the dry run (`colorfeat.stages.dryrun`) and the Prefect flow
(`flows.pipeline`); publishing hands the rows' parts to the store.

A stage with a `config` slice is a directory stage: its output goes to `WORK/stages/<key>`, where
the key hashes its name, its inputs' keys, its config slice and its code version
(`colorfeat.hashing.stage_key`); options that only change how fast a stage runs (workers, Dask
address, batch size) are in no slice. A stage without one (acquire, publish) is keyed by what it
returns (source identity, version id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from colorfeat import __version__
from colorfeat.config import PipelineConfig
from colorfeat.constants import REBALANCE_ALPHA, REBALANCE_GAMMA, STORE_SCHEMA
from colorfeat.hashing import content_of
from colorfeat.stages import acquire, captions, embeddings, features, images, images_part, vocab
from colorfeat.stages import priors as priors_stage
from colorfeat.stages.context import Context, Cost, Estimate
from colorfeat.stages.publish import publish_version
from colorfeat.store.parts import Part
from colorfeat.trunk.version import FEATURES_VERSION

FEATURES = "features"  # the features stage; `features:<set>` for each further feature set
PUBLISH = "publish"


@dataclass(frozen=True)
class Stage:
    """One stage: `run(context) -> small JSON dict`; `config` None: not cached, no directory."""

    name: str
    run: Callable[[Context], dict]
    reads: tuple[str, ...] = ()
    config: Callable[[PipelineConfig], dict[str, Any]] | None = None
    version: object = 0  # bump when the same inputs give different output
    retries: int = 0  # Prefect retries on a transient (network, storage) fault
    kind: str | None = None  # the name its key hashes, where several rows share one (features)
    adds: Part | None = None  # what it adds to a published version
    cost: Callable[[Estimate], Cost] | None = None  # None: nothing worth counting

    @property
    def key_name(self) -> str:
        return self.kind or self.name

    @property
    def cached(self) -> bool:
        return self.config is not None

    @property
    def code_version(self) -> str:
        """The package version, the store schema and the stage's own version."""
        return f"{__version__}+{STORE_SCHEMA}+{self.version}"

    def key_of(self, result: dict) -> str | None:
        """An uncached stage's key, from what it returned."""
        return result.get("identity") or result.get("version")


def _publish(ctx: Context) -> dict:
    """The publish row: every row's part with its result, to the store."""
    rows = stages_for(ctx.config)
    parts = version_parts(rows, ctx.inputs)
    return publish_version(ctx, parts, content_config(ctx.config))


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("acquire", acquire.run, retries=3, cost=acquire.cost),
        Stage(
            "captions", captions.run, ("acquire",),
            lambda c: {"lexicon": content_of(c.lexicon), "limit": c.limit},
        ),
        Stage(
            "vocab", vocab.run, ("captions",), lambda c: {"min_count": c.min_count},
            adds=vocab.PART,
        ),
        Stage(
            "embeddings", embeddings.run, ("captions", "vocab"),
            lambda c: {"spec": content_of(c.embeddings), "dim": c.embedding_dim, "seed": c.seed},
            adds=embeddings.PART, cost=embeddings.cost,
        ),
        Stage(
            "images", images_part.run, ("acquire", "captions", "vocab"),
            lambda c: {"image_size": c.image_size, "max_len": c.max_len},
            version=images.STAGE_VERSION, retries=2, adds=images_part.PART, cost=images_part.cost,
        ),
        Stage(
            "priors", priors_stage.run, ("images",),
            lambda c: {"alpha": REBALANCE_ALPHA, "gamma": REBALANCE_GAMMA},
            adds=priors_stage.PART, cost=priors_stage.cost,
        ),
        Stage(
            FEATURES, features.run, ("images",), features.config_slice, version=FEATURES_VERSION,
            adds=features.PART, cost=features.cost,
        ),
        Stage(PUBLISH, _publish, ("acquire", "captions"), retries=2),
    )
}  # fmt: skip


@contextmanager
def registered(stage: Stage, before: str = PUBLISH) -> Iterator[Stage]:
    """Run `stage` as part of every rebuild (inserted before `before`) for the block's duration."""
    saved = dict(STAGES)
    order = list(saved.values())
    order.insert(list(saved).index(before), stage)
    STAGES.clear()
    STAGES.update((s.name, s) for s in order)
    try:
        yield stage
    finally:
        STAGES.clear()
        STAGES.update(saved)


def is_features(name: str) -> bool:
    """Whether `name` is a features stage: `features`, or `features:<set>` for a further set."""
    return name == FEATURES or name.startswith(FEATURES + ":")


def stages_for(config: PipelineConfig) -> dict[str, Stage]:
    """The table as `config` runs it: the features row once per trunk, in the order given, and
    the publish row reading every row that adds to a version.

    The first trunk's row is the table's own `features`; each further one is
    `features:<backbone>.<layer>`. All are keyed as `features` (their key depends on the images
    key and their trunk alone), so a feature set built before is reused whatever its position.
    """
    rows: dict[str, Stage] = {}
    for stage in STAGES.values():
        rows[stage.name] = stage
        if stage.name == FEATURES:
            for i, trunk in enumerate(config.trunks[1:], start=1):
                rows[f"{FEATURES}:{trunk.name}"] = _trunk_row(stage, trunk.name, i)
    if PUBLISH in rows:
        adding = tuple(n for n, s in rows.items() if s.adds is not None and n != PUBLISH)
        reads = rows[PUBLISH].reads
        rows[PUBLISH] = replace(
            rows[PUBLISH], reads=reads + tuple(n for n in adding if n not in reads)
        )
    return rows


def _trunk_row(stage: Stage, name: str, i: int) -> Stage:
    """The features row of the i-th trunk."""
    return replace(
        stage, name=f"{FEATURES}:{name}", kind=FEATURES, run=partial(stage.run, trunk=i),
        config=partial(stage.config, trunk=i),
        cost=partial(stage.cost, trunk=i) if stage.cost else None,
    )  # fmt: skip


def content_config(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    """The config slice of every directory stage: what determined a version's content."""
    table = stages_for(config).values()
    return {s.name: s.config(config) for s in table if s.config is not None}


def version_parts(
    rows: Mapping[str, Stage], results: Mapping[str, dict]
) -> list[tuple[Part, dict]]:
    """(part, result) of every row in `rows` that adds to a version and has a result, in order."""
    return [
        (row.adds, results[name])
        for name, row in rows.items()
        if row.adds is not None and name in results
    ]
