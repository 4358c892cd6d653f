"""Tasks of the second half of a rebuild: colour priors, backbone features, publishing a version."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.tasks import exponential_backoff

from colorfeat import extract, priors_stage, store
from colorfeat.config import BackboneConfig
from flows.caching import stage_task
from flows.retry import retry_if_transient


@stage_task("priors", task_run_name="{out_dir.name}")
def count_priors(out_dir: Path, images: dict, workers: int, dask_address: str | None) -> dict:
    """Empirical ab-bin prior of the train targets and its rebalancing weights."""
    return priors_stage.priors_stage(images, out_dir, workers=workers, dask_address=dask_address)


@stage_task("features", task_run_name="{out_dir.name}")
def extract_features(
    out_dir: Path,
    images: dict,
    backbone: BackboneConfig,
    device: str,
    batch_size: int,
    devices: list[str] | None = None,
    precision: str = "auto",
) -> dict:
    """Frozen-trunk features of every image, resumable by chunk, one process per device."""
    return extract.features_stage(
        images, backbone, out_dir, device=device, batch_size=batch_size, devices=devices,
        precision=precision,
    )  # fmt: skip


@task(
    name="publish",
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_condition_fn=retry_if_transient,
)
def publish_version(root: str, parts: dict, attrs: dict) -> dict:
    """Assemble, validate and atomically publish the version; move LATEST to it."""
    return store.publish(root, parts, attrs=attrs)
