"""Priors stage: the empirical ab-bin prior and rebalancing weights of the train targets.

Writes `counts.npy` (int64), `prior.npy` (float64), `weights.npy` (float32), `prior.png` and
`_SUCCESS` (the result JSON) into its output directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from colorfeat.constants import NUM_AB_BINS, REBALANCE_ALPHA, REBALANCE_GAMMA
from colorfeat.errors import UserError
from colorfeat.priors import bin_counts, plot_prior, prior_from_counts, rebalance_weights

SUCCESS = "_SUCCESS"


def train_bin_counts(
    images_zarr: str | Path, split: str = "train", scheduler: Any = None
) -> np.ndarray:
    """int64 (625,) counts of a split's ab_bins, one partial bincount per chunk, then summed."""
    import dask
    import dask.array as da

    path = Path(images_zarr)
    try:
        bins = da.from_zarr(str(path), component=f"{split}/ab_bins")  # (N, S/4, S/4)
    except (FileNotFoundError, KeyError) as exc:
        raise UserError(
            f"no {split}/ab_bins in {path}: the images stage has not written it"
        ) from exc
    partial = bins.map_blocks(
        lambda block: bin_counts(block)[None, :],  # (1, 625) per chunk
        dtype=np.int64,
        chunks=((1,) * bins.numblocks[0], (NUM_AB_BINS,)),
        drop_axis=[1, 2],
        new_axis=[1],
    )
    with dask.config.set(scheduler=scheduler or "threads"):
        return partial.sum(axis=0).compute()  # (625,)


def priors_stage(
    images: dict,
    out_dir: Path,
    *,
    alpha: float = REBALANCE_ALPHA,
    gamma: float = REBALANCE_GAMMA,
    workers: int = 1,
    dask_address: str | None = None,
) -> dict:
    """Count train bins, derive prior and weights, plot the prior; idempotent on `out_dir`."""
    out_dir = Path(out_dir)
    done = out_dir / SUCCESS
    if done.exists():
        return {**json.loads(done.read_text()), "executed": False}
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)

    scheduler = None
    if dask_address is not None:
        from distributed import Client

        client = Client(dask_address)
        scheduler = client.get
    try:
        counts = train_bin_counts(images["path"], scheduler=scheduler)
    finally:
        if dask_address is not None:
            client.close()
    if counts.sum() == 0:
        raise UserError("the train split has no targets: cannot compute a prior")
    prior = prior_from_counts(counts)
    weights = rebalance_weights(prior, alpha=alpha, gamma=gamma)
    np.save(partial / "counts.npy", counts)
    np.save(partial / "prior.npy", prior)
    np.save(partial / "weights.npy", weights.astype(np.float32))
    plot_prior(
        prior, partial / "prior.png", title=f"train ab prior ({int(counts.sum()):,} targets)"
    )

    result = {
        "path": str(out_dir),
        "alpha": alpha,
        "gamma": gamma,
        "nonzero_bins": int((counts > 0).sum()),
        "targets": int(counts.sum()),
        "mode_bin": int(np.argmax(counts)),
    }
    (partial / SUCCESS).write_text(json.dumps(result, indent=2))
    partial.rename(out_dir)
    return {**result, "executed": True}
