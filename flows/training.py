"""The `train` flow: fit a colorizer on a published store version with `colortrain`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task


@task(name="fit")
def fit_colorizer(config: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) one colorizer run; returns the checkpoint path and the last metrics."""
    from colortrain.config import TrainConfig
    from colortrain.train import fit

    return fit(TrainConfig.from_dict(config))


@flow(name="train")
def train(
    store: str,
    out: str,
    model: str = "film",
    preset: str = "small",
    epochs: int = 10,
    max_steps: int | None = None,
    batch_size: int = 24,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Fit a colorizer on a store version into `out/<version id>/<model>-<preset>`, resumably."""
    from colorfeat.store import open_store
    from colortrain.config import TrainConfig

    version = open_store(store).path
    run_dir = Path(out) / Path(version).name / f"{model}-{preset}"
    config = TrainConfig(
        store=version, out=str(run_dir), model=model, preset=preset, epochs=epochs,
        max_steps=max_steps, batch_size=batch_size, device=device, seed=seed,
        resume=True, progress=False,
    )  # fmt: skip
    return fit_colorizer(config.to_dict())
