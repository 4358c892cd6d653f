"""Priors: mergeable counts, the prior, rebalancing weights against the original formula."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from colorfeat.constants import NUM_AB_BINS
from colorfeat.priors import (
    bin_counts,
    merge_counts,
    plot_prior,
    prior_from_counts,
    rebalance_weights,
)


def reference_weights(p: np.ndarray, alpha: float = 1.0, gamma: float = 0.5) -> np.ndarray:
    """The original definition, written out step by step."""
    u = np.zeros_like(p)
    u[p > 0] = 1.0 / np.count_nonzero(p)
    mix = (1 - gamma) * p + gamma * u
    w = np.zeros_like(p)
    w[p > 0] = mix[p > 0] ** -alpha
    return w / np.sum(p * w)


def test_weights_equal_the_formula_on_the_reference_prior(reference_dir):
    p = np.load(reference_dir / "coco_priors_onehot_625.npy")
    w = rebalance_weights(p)
    np.testing.assert_allclose(w, reference_weights(p), rtol=0, atol=1e-12)
    assert np.sum(p * w) == pytest.approx(1.0, abs=1e-12)
    assert (w[p == 0] == 0).all()
    # Rare colours are up-weighted relative to gray, the most common bin.
    assert w[312] == w[p > 0].min()


@pytest.mark.parametrize("alpha,gamma", [(1.0, 0.0), (0.5, 0.5), (1.0, 1.0)])
def test_weights_other_settings(reference_dir, alpha, gamma):
    p = np.load(reference_dir / "coco_priors_onehot_625.npy")
    np.testing.assert_allclose(
        rebalance_weights(p, alpha, gamma), reference_weights(p, alpha, gamma), atol=1e-12
    )


def test_partial_counts_merge_to_the_whole():
    rng = np.random.default_rng(1)
    bins = rng.integers(0, NUM_AB_BINS, size=(10, 8, 8)).astype(np.uint16)
    whole = bin_counts(bins)
    parts = merge_counts(bin_counts(bins[i : i + 3]) for i in range(0, 10, 3))
    np.testing.assert_array_equal(parts, whole)
    assert whole.dtype == np.int64 and whole.sum() == bins.size
    prior = prior_from_counts(whole)
    assert prior.dtype == np.float64 and prior.sum() == pytest.approx(1.0)


def test_counts_reject_out_of_range_bins():
    with pytest.raises(ValueError, match="outside"):
        bin_counts(np.array([625]))


def test_prior_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="zero counts"):
        prior_from_counts(np.zeros(NUM_AB_BINS))


def test_prior_plot_is_written(tmp_path, reference_dir):
    p = np.load(reference_dir / "coco_priors_onehot_625.npy")
    out = plot_prior(p, tmp_path / "prior.png")
    with Image.open(out) as img:
        assert img.size[0] > 400 and img.size[1] > 300
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 10  # not a blank canvas
