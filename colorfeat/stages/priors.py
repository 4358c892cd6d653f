"""Priors stage: the empirical ab-bin prior and rebalancing weights of the train targets.

Writes `counts.npy` (int64), `prior.npy` (float64), `weights.npy` (float32), `prior.png` and
`_SUCCESS` (the result JSON) into its output directory. Adds `lab/grid`, `lab/prior` and
`lab/weights` to a version.

Cost: PRIORS_S, the wall time of the stage in `colorfeat run --source synthetic --limit 600
--image-size 64 --weights none --device cpu` (a shared machine, best of the runs).
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import numpy as np
import zarr

from colorfeat.constants import NUM_AB_BINS, REBALANCE_ALPHA, REBALANCE_GAMMA
from colorfeat.errors import UserError
from colorfeat.lab import ab_grid
from colorfeat.parallel import Executor, commit, completed, executor, partial_dir
from colorfeat.priors import (
    bin_counts,
    merge_counts,
    plot_prior,
    prior_from_counts,
    rebalance_weights,
)
from colorfeat.stages.context import Context, Cost, Estimate
from colorfeat.store import schema
from colorfeat.store.parts import Build, Check, Part

PRIORS_S = 2.0


def _chunk_counts(bounds: tuple[int, int], images_zarr: str, split: str) -> np.ndarray:
    bins = zarr.open_array(images_zarr, path=schema.split_path(split, schema.AB_BINS), mode="r")
    return bin_counts(bins[bounds[0] : bounds[1]])


def split_bin_counts(
    images_zarr: str | Path, split: str = "train", run: Executor | None = None
) -> np.ndarray:
    """int64 (625,) counts of a split's ab_bins: one partial bincount per chunk, then merged."""
    path = str(images_zarr)
    try:
        bins = zarr.open_array(path, path=schema.split_path(split, schema.AB_BINS), mode="r")
    except (FileNotFoundError, KeyError) as exc:
        where = schema.split_path(split, schema.AB_BINS)
        raise UserError(f"no {where} in {path}: run the images stage first") from exc
    n, step = bins.shape[0], bins.chunks[0]
    ranges = [(start, min(start + step, n)) for start in range(0, n, step)]
    fn = partial(_chunk_counts, images_zarr=path, split=split)
    parts = run.map(fn, ranges) if run is not None else map(fn, ranges)
    return merge_counts(parts)


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
    if (done := completed(out_dir)) is not None:
        return {**done, "executed": False}
    shutil.rmtree(out_dir.with_name(out_dir.name + ".partial"), ignore_errors=True)
    staging = partial_dir(out_dir)

    with executor(workers, dask_address) as run:
        counts = split_bin_counts(images["path"], run=run)
    if counts.sum() == 0:
        raise UserError("the train split has no targets: cannot compute a prior")
    prior = prior_from_counts(counts)
    weights = rebalance_weights(prior, alpha=alpha, gamma=gamma)
    np.save(staging / "counts.npy", counts)
    np.save(staging / "prior.npy", prior)
    np.save(staging / "weights.npy", weights.astype(np.float32))
    title = f"train ab prior ({int(counts.sum()):,} targets)"
    plot_prior(prior, staging / "prior.png", title=title)

    result = {
        "path": str(out_dir),
        "alpha": alpha,
        "gamma": gamma,
        "nonzero_bins": int((counts > 0).sum()),
        "targets": int(counts.sum()),
        "mode_bin": int(np.argmax(counts)),
    }
    return {**commit(staging, out_dir, result), "executed": True}


def run(ctx: Context) -> dict:
    """The stage function of the table: `priors_stage` on the images."""
    cfg = ctx.config
    return priors_stage(
        ctx.inputs["images"], ctx.out_dir, workers=cfg.workers, dask_address=cfg.dask_address
    )


def _write(build: Build, results: list[dict]) -> None:
    for result in results:
        where = Path(result["path"])
        build.table(schema.ARRAYS[schema.LAB_GRID], ab_grid())
        build.table(schema.ARRAYS[schema.LAB_PRIOR], np.load(where / "prior.npy"))
        build.table(
            schema.ARRAYS[schema.LAB_WEIGHTS], np.load(where / "weights.npy"),
            alpha=float(result["alpha"]), gamma=float(result["gamma"]),
        )  # fmt: skip


def _check(check: Check) -> None:
    for path, shape in ((schema.LAB_GRID, (NUM_AB_BINS, 2)), (schema.LAB_PRIOR, (NUM_AB_BINS,))):
        check.need(check.group[path].shape == shape, f"{path} shape")


def cost(est: Estimate) -> Cost:
    """A few seconds: one bincount per chunk of the train targets."""
    return Cost(PRIORS_S)


PART = Part(
    "priors", _write, check=_check,
    arrays=tuple(schema.ARRAYS[p] for p in (schema.LAB_GRID, schema.LAB_PRIOR, schema.LAB_WEIGHTS)),
)  # fmt: skip
