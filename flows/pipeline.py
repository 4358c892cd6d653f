"""The `rebuild` flow: a source in, a published feature-store version out, one task per stage.

acquire -> captions -> vocab -> embeddings -> images -> priors -> features -> publish, each stage
into `WORK/stages/<stage key>` (see flows.plan), then a summary and per-colour table as Prefect
artifacts. With `train_dir`, the `train` flow then fits a colorizer on the published version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from colorfeat.config import BackboneConfig, PipelineConfig
from colorfeat.constants import EMBEDDING_DIM
from colorfeat.redact import conceal, redact_url
from flows.caching import Ledger, work_dir_lock
from flows.features import count_priors, extract_features, publish_version
from flows.ingest import (
    acquire_source,
    build_vocab,
    embed_words,
    keep_colour_captions,
    prepare_images,
)
from flows.plan import features_precision, plan_rebuild, stage_configs
from flows.report import report_rebuild, skipped_images
from flows.training import train


def pipeline_config(
    source: str,
    store: str,
    work_dir: str,
    *,
    limit: int | None = None,
    image_size: int = 224,
    backbone: str = "resnet101",
    layer: str = "layer2",
    weights: str = "imagenet",
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 64,
    embeddings: str = "word2vec",
    embedding_dim: int = EMBEDDING_DIM,
    workers: int = 1,
    dask_address: str | None = None,
    seed: int = 0,
) -> PipelineConfig:
    """The validated PipelineConfig of the `colorfeat run` options (paths made absolute)."""
    trunk = BackboneConfig(
        backbone=backbone, layer=layer, weights=weights, image_size=image_size, seed=seed
    )
    return PipelineConfig(
        source=source,
        store=store if "://" in store else str(Path(store).resolve()),
        work_dir=str(Path(work_dir).resolve()),
        limit=limit,
        backbone=trunk,
        device=device,
        precision=precision,
        batch_size=batch_size,
        embeddings=embeddings,
        embedding_dim=embedding_dim,
        workers=workers,
        dask_address=dask_address,
        seed=seed,
    )


@flow(name="rebuild")
def rebuild(
    source: str = "synthetic",
    store: str = "store",
    work_dir: str = "work",
    limit: int | None = None,
    image_size: int = 224,
    backbone: str = "resnet101",
    layer: str = "layer2",
    weights: str = "imagenet",
    device: str = "auto",
    batch_size: int = 64,
    embeddings: str = "word2vec",
    workers: int = 1,
    dask_address: str | None = None,
    seed: int = 0,
    precision: str = "auto",
    devices: list[str] | None = None,
    train_dir: str | None = None,
    train_preset: str = "small",
    train_max_steps: int | None = None,
) -> dict[str, Any]:
    """Rebuild the feature store from a source and publish a version (or reuse the identical one).

    `devices` spreads feature extraction over several devices (default: every GPU when cuda);
    `train_dir` also fits a colorizer on the published version. Prefect records the parameters:
    give a URL's credentials through `colorfeat run`, which conceals them (docs/security.md).
    """
    cfg = pipeline_config(
        conceal(source), store, work_dir, limit=limit, image_size=image_size, backbone=backbone,
        layer=layer, weights=weights, device=device, batch_size=batch_size,
        embeddings=embeddings, workers=workers, dask_address=dask_address, seed=seed,
        precision=precision,
    )  # fmt: skip
    with work_dir_lock(cfg.work_dir):
        summary = build_version(cfg, devices)
    if train_dir is not None:
        summary["train"] = train(
            store=summary["path"], out=train_dir, preset=train_preset, max_steps=train_max_steps,
            device=cfg.device, seed=cfg.seed,
        )  # fmt: skip
    return summary


def build_version(cfg: PipelineConfig, devices: list[str] | None = None) -> dict[str, Any]:
    """The stage table, run inside the rebuild flow; returns the run's summary."""
    stages = Ledger(Path(cfg.work_dir) / "prefect" / "results")
    acquired = stages.call("acquire", acquire_source, cfg.source, cfg.work_dir, cfg.limit, cfg.seed)
    plan = plan_rebuild(cfg, acquired["identity"])
    captions = stages.run(plan["captions"], keep_colour_captions, acquired, cfg.lexicon, cfg.limit)
    vocab = stages.run(plan["vocab"], build_vocab, captions, cfg.min_count)
    vectors = stages.run(
        plan["embeddings"], embed_words, captions, vocab, cfg.embeddings, cfg.embedding_dim,
        cfg.seed,
    )  # fmt: skip
    images = stages.run(
        plan["images"], prepare_images, acquired, captions, vocab,
        cfg.image_size, cfg.max_len, cfg.workers, cfg.dask_address,
    )  # fmt: skip
    priors = stages.run(plan["priors"], count_priors, images, cfg.workers, cfg.dask_address)
    features = stages.run(
        plan["features"], extract_features, images, cfg.backbone, cfg.device, cfg.batch_size,
        devices, features_precision(cfg),
    )  # fmt: skip
    parts = {
        "images": images,
        "vocab": vocab,
        "embeddings": vectors,
        "priors": priors,
        "features": [features],
        "keys": {name: stage.key for name, stage in plan.items()},
    }
    attrs = version_attrs(cfg, acquired, captions, images)
    version = stages.call("publish", publish_version, cfg.store, parts, attrs)

    summary = {
        "flow_run_id": str(flow_run.id),
        "version": version["version"],
        "path": version["path"],
        "published": version["published"],
        "source": attrs["source"],
        "counts": {"captions": captions["counts"], "images": images["counts"]},
        "skipped": images.get("skipped", 0),
        "stages": stages.stages,
        "executed": stages.executed,
    }
    report_rebuild(summary, images)
    return summary


def version_attrs(config: PipelineConfig, source: dict, captions: dict, images: dict) -> dict:
    """The provenance a version's zarr.json carries: source, content config, lexicon, counts."""
    from colorfeat.captions import load_lexicon
    from colorfeat.hashing import file_sha256

    return {
        "source": {"spec": redact_url(config.source), "identity": source["identity"]},
        "config": stage_configs(config),
        "lexicon": {
            "file": Path(config.lexicon).name,
            "sha256": file_sha256(config.lexicon),
            "words": sorted(load_lexicon(config.lexicon)),
        },
        "counts": {"captions": captions["counts"], "images": images["counts"]},
        "skipped": skipped_images(images),
    }
