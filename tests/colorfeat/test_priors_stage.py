"""Priors stage: chunked counts over a zarr split, outputs, idempotence."""

from __future__ import annotations

import numpy as np
import zarr
from PIL import Image

from colorfeat.priors import bin_counts, prior_from_counts, rebalance_weights
from colorfeat.stages.priors import priors_stage, split_bin_counts


def write_bins(path, bins: np.ndarray, chunk: int) -> None:
    group = zarr.open_group(str(path), mode="w")
    group.create_group("train").create_array("ab_bins", data=bins, chunks=(chunk, *bins.shape[1:]))


def test_chunked_counts_equal_one_bincount(tmp_path):
    rng = np.random.default_rng(0)
    bins = rng.integers(0, 625, size=(23, 8, 8)).astype(np.uint16)
    write_bins(tmp_path / "images.zarr", bins, chunk=5)
    np.testing.assert_array_equal(split_bin_counts(tmp_path / "images.zarr"), bin_counts(bins))


def test_stage_writes_prior_weights_plot_and_is_idempotent(tmp_path):
    rng = np.random.default_rng(1)
    bins = rng.choice([312, 313, 100, 500], p=[0.7, 0.2, 0.05, 0.05], size=(12, 4, 4))
    write_bins(tmp_path / "images.zarr", bins.astype(np.uint16), chunk=4)
    out = tmp_path / "stages" / "priors-x"

    first = priors_stage({"path": str(tmp_path / "images.zarr")}, out)
    assert first["executed"] and first["nonzero_bins"] == 4 and first["mode_bin"] == 312
    counts = np.load(out / "counts.npy")
    prior = np.load(out / "prior.npy")
    weights = np.load(out / "weights.npy")
    assert prior.dtype == np.float64 and weights.dtype == np.float32
    np.testing.assert_array_equal(prior, prior_from_counts(bin_counts(bins)))
    np.testing.assert_allclose(weights, rebalance_weights(prior), rtol=1e-6)
    np.testing.assert_array_equal(counts, bin_counts(bins))
    with Image.open(out / "prior.png") as img:
        assert img.size[0] > 100
    assert not out.with_name("priors-x.partial").exists()

    stamp = (out / "prior.npy").stat().st_mtime_ns
    second = priors_stage({"path": str(tmp_path / "images.zarr")}, out)
    assert second["executed"] is False
    assert {k: v for k, v in second.items() if k != "executed"} == {
        k: v for k, v in first.items() if k != "executed"
    }
    assert (out / "prior.npy").stat().st_mtime_ns == stamp
