"""The stages of a rebuild, declared once: name, function, inputs, config slice, code version.

Every runner iterates `STAGES` in order: the plain local runner (`colorfeat.stages.runner`), the
cache-key planner and the Prefect flow (`colorfeat.stages.plan`, `flows.pipeline`). A stage with a
`config` slice is a directory stage: its output goes to `WORK/stages/<key>`, where the key hashes
its name, its inputs'
keys, its config slice and its code version (`colorfeat.hashing.stage_key`); options that only
change how fast a stage runs (workers, Dask address, batch size) are in no slice. A stage without
one (acquire, publish) is keyed by what it returns (source identity, version id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from colorfeat import __version__, sources
from colorfeat.config import PipelineConfig, resolve_precision
from colorfeat.constants import REBALANCE_ALPHA, REBALANCE_GAMMA, STORE_SCHEMA
from colorfeat.hashing import file_sha256
from colorfeat.redact import redact_url
from colorfeat.stages import captions, embeddings, images, vocab
from colorfeat.stages import priors as priors_stage

# The features stage's version lives here, not in colorfeat.trunk.extract, so that planning a
# rebuild never imports PyTorch; extract.py stamps it into the feature attrs.
# 2: zstd level 1 features; 3: structured `trunk` attrs, any torchvision trunk
FEATURES_VERSION = f"colorfeat-{__version__}/extract-3"
FEATURES = "features"  # the features stage; `features:<set>` for each further feature set


@dataclass(frozen=True)
class Context:
    """What a stage function gets: the config, its inputs' results by stage name, where to write."""

    config: PipelineConfig
    inputs: Mapping[str, dict]
    out_dir: Path | None = None
    keys: Mapping[str, str] | None = None  # the directory stages' keys so far (publish)


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


# --------------------------------------------------------------------------- config slices
def content_of(spec: str) -> str:
    """A named choice (`word2vec`, `imagenet`, `none`) as is; a file by its SHA-256."""
    path = Path(spec)
    return f"sha256:{file_sha256(path)}" if path.is_file() else spec


def planned_device(device: str) -> str:
    """ "cpu" or "cuda" for `--device`, importing PyTorch only where a GPU may be present."""
    if device != "auto":
        return "cuda" if device.startswith("cuda") else device
    if not any(Path("/dev").glob("nvidia[0-9]*")) and not Path("/dev/kfd").exists():
        return "cpu"  # no NVIDIA or ROCm device node: PyTorch could not see a GPU either
    from colorfeat.device import resolve_device

    return resolve_device("auto").type


def features_precision(config: PipelineConfig) -> str:
    """The compute precision extraction uses: it changes the stored values, so it is in the key."""
    return resolve_precision(config.precision, planned_device(config.device))


def _features_config(config: PipelineConfig, trunk: int = 0) -> dict[str, Any]:
    backbone = config.trunks[trunk].to_dict()
    backbone["weights"] = content_of(backbone["weights"])
    return {**backbone, "precision": features_precision(config)}


# --------------------------------------------------------------------------- stage functions
def _acquire(ctx: Context) -> dict:
    cfg = ctx.config
    return sources.acquire(cfg.source, Path(cfg.work_dir), limit=cfg.limit, seed=cfg.seed)


def _captions(ctx: Context) -> dict:
    cfg = ctx.config
    return captions.captions_stage(ctx.inputs["acquire"], cfg.lexicon, ctx.out_dir, limit=cfg.limit)


def _vocab(ctx: Context) -> dict:
    return vocab.vocab_stage(ctx.inputs["captions"], ctx.out_dir, min_count=ctx.config.min_count)


def _embeddings(ctx: Context) -> dict:
    cfg, got = ctx.config, ctx.inputs
    return embeddings.embeddings_stage(
        got["captions"], got["vocab"], ctx.out_dir, spec=cfg.embeddings, dim=cfg.embedding_dim,
        seed=cfg.seed,
    )  # fmt: skip


def _images(ctx: Context) -> dict:
    cfg, got = ctx.config, ctx.inputs
    return images.images_stage(
        got["acquire"], got["captions"], got["vocab"], ctx.out_dir, image_size=cfg.image_size,
        max_len=cfg.max_len, workers=cfg.workers, dask_address=cfg.dask_address,
    )  # fmt: skip


def _priors(ctx: Context) -> dict:
    cfg = ctx.config
    return priors_stage.priors_stage(
        ctx.inputs["images"], ctx.out_dir, workers=cfg.workers, dask_address=cfg.dask_address
    )


def _features(ctx: Context, trunk: int = 0) -> dict:
    from colorfeat.trunk.extract import features_stage  # PyTorch: only when features are extracted

    cfg = ctx.config
    return features_stage(
        ctx.inputs["images"], cfg.trunks[trunk], ctx.out_dir, device=cfg.device,
        batch_size=cfg.batch_size, devices=cfg.devices, precision=features_precision(cfg),
        compile_trunk=cfg.compile_trunk,
    )  # fmt: skip


def _publish(ctx: Context) -> dict:
    from colorfeat.store import publish

    got = ctx.inputs
    parts = {
        "images": got["images"],
        "vocab": got["vocab"],
        "embeddings": got["embeddings"],
        "priors": got["priors"],
        "features": [got[name] for name in ctx.inputs if is_features(name)],
        "keys": dict(ctx.keys or {}),
    }
    return publish(ctx.config.store, parts, attrs=version_attrs(ctx.config, got))


# --------------------------------------------------------------------------- the table
STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("acquire", _acquire, retries=3),
        Stage(
            "captions", _captions, ("acquire",),
            lambda c: {"lexicon": content_of(c.lexicon), "limit": c.limit},
        ),
        Stage("vocab", _vocab, ("captions",), lambda c: {"min_count": c.min_count}),
        Stage(
            "embeddings", _embeddings, ("captions", "vocab"),
            lambda c: {"spec": content_of(c.embeddings), "dim": c.embedding_dim, "seed": c.seed},
        ),
        Stage(
            "images", _images, ("acquire", "captions", "vocab"),
            lambda c: {"image_size": c.image_size, "max_len": c.max_len},
            version=images.STAGE_VERSION, retries=2,
        ),
        Stage(
            "priors", _priors, ("images",),
            lambda c: {"alpha": REBALANCE_ALPHA, "gamma": REBALANCE_GAMMA},
        ),
        Stage(FEATURES, _features, ("images",), _features_config, version=FEATURES_VERSION),
        Stage(
            "publish", _publish,
            ("acquire", "captions", "vocab", "embeddings", "images", "priors", "features"),
            retries=2,
        ),
    )
}  # fmt: skip


@contextmanager
def registered(stage: Stage, before: str = "publish") -> Iterator[Stage]:
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
    """The table as `config` runs it: the features row once per trunk, in the order given.

    The first trunk's row is the table's own `features`; each further one is
    `features:<backbone>.<layer>`. All are keyed as `features` (their key depends on the images
    key and their trunk alone), so a feature set built before is reused whatever its position.
    """
    rows: dict[str, Stage] = {}
    for stage in STAGES.values():
        rows[stage.name] = stage
        if stage.name == FEATURES:
            for i, trunk in enumerate(config.trunks[1:], start=1):
                name = f"{FEATURES}:{trunk.name}"
                rows[name] = replace(
                    stage, name=name, kind=FEATURES, run=partial(stage.run, trunk=i),
                    config=partial(stage.config, trunk=i),
                )  # fmt: skip
    more = tuple(name for name in rows if is_features(name) and name != FEATURES)
    if more and "publish" in rows:
        rows["publish"] = replace(rows["publish"], reads=rows["publish"].reads + more)
    return rows


def content_config(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    """The config slice of every directory stage: what determined a version's content."""
    table = stages_for(config).values()
    return {s.name: s.config(config) for s in table if s.config is not None}


def version_attrs(config: PipelineConfig, results: Mapping[str, dict]) -> dict:
    """The provenance a version's zarr.json carries: source, content config, lexicon, counts."""
    import zarr

    got = results
    skipped = zarr.open_group(got["images"]["path"], mode="r").attrs.get("skipped", [])
    return {
        "source": source_attrs(config, got["acquire"]),
        "config": content_config(config),
        "lexicon": {
            "file": Path(config.lexicon).name,
            "sha256": file_sha256(config.lexicon),
            "words": sorted(captions.load_lexicon(config.lexicon)),
        },
        "counts": {"captions": got["captions"]["counts"], "images": got["images"]["counts"]},
        "skipped": list(skipped),
    }


def source_attrs(config: PipelineConfig, acquired: dict) -> dict[str, str]:
    """The source as a version records it: its spec (credentials redacted) and content identity."""
    return {"spec": redact_url(config.source), "identity": acquired["identity"]}
