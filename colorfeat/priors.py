"""Empirical ab-bin priors and the class-rebalancing weights derived from them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from colorfeat.constants import AB_STEP, L_CENTER, NUM_AB_BINS, REBALANCE_ALPHA, REBALANCE_GAMMA


def bin_counts(bins: np.ndarray) -> np.ndarray:
    """int64 (625,) counts of the bin indices in any array; a mergeable partial result."""
    bins = np.asarray(bins)
    if bins.size and int(bins.max()) >= NUM_AB_BINS:
        raise ValueError(f"bin index {int(bins.max())} is outside 0..{NUM_AB_BINS - 1}")
    return np.bincount(bins.ravel().astype(np.int64), minlength=NUM_AB_BINS).astype(np.int64)


def merge_counts(parts: Iterable[np.ndarray]) -> np.ndarray:
    """Sum partial counts (from chunks, workers or splits) into one int64 (625,) array."""
    total = np.zeros(NUM_AB_BINS, dtype=np.int64)
    for part in parts:
        total += np.asarray(part, dtype=np.int64)
    return total


def prior_from_counts(counts: np.ndarray) -> np.ndarray:
    """float64 (625,) empirical distribution from bin counts."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("cannot build a prior from zero counts")
    return counts / total


def rebalance_weights(
    prior: np.ndarray, alpha: float = REBALANCE_ALPHA, gamma: float = REBALANCE_GAMMA
) -> np.ndarray:
    """float64 (625,) class-rebalancing weights; expected weight under the prior is 1.

    mix = (1 - gamma) p + gamma u, with u uniform over the bins seen; w = mix^-alpha, zero for
    unseen bins, normalised so that sum(p * w) = 1.
    """
    p = np.asarray(prior, dtype=np.float64)
    seen = p > 0
    if not seen.any():
        raise ValueError("the prior has no non-zero bin")
    uniform = np.where(seen, 1.0 / seen.sum(), 0.0)
    mix = (1.0 - gamma) * p + gamma * uniform
    w = np.zeros_like(p)
    w[seen] = mix[seen] ** -alpha
    return w / np.sum(p * w)


def plot_prior(prior: np.ndarray, path: str | Path, title: str = "ab prior") -> Path:
    """Write a PNG of the prior over the ab plane: log-scaled, each bin in its own colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from colorfeat.lab import ab_grid, lab_to_rgb

    grid = ab_grid()
    p = np.asarray(prior, dtype=np.float64)
    side = int(round(np.sqrt(NUM_AB_BINS)))
    lab = np.concatenate([np.full((NUM_AB_BINS, 1), L_CENTER, np.float32), grid], axis=1)
    colours = lab_to_rgb(lab).reshape(side, side, 3)  # (a, b, 3)
    logp = np.full(NUM_AB_BINS, np.nan)
    logp[p > 0] = np.log10(p[p > 0])
    half = AB_STEP / 2
    extent = (grid[:, 1].min() - half, grid[:, 1].max() + half)
    extent += (grid[:, 0].max() + half, grid[:, 0].min() - half)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    alpha = np.where(p > 0, 1.0, 0.12).reshape(side, side, 1)
    axes[0].imshow(np.concatenate([colours / 255.0, alpha], axis=2), extent=extent)
    axes[0].set_title("bins seen (in their colour at L=50)")
    im = axes[1].imshow(logp.reshape(side, side), cmap="magma", extent=extent)
    axes[1].set_title("log10 prior")
    fig.colorbar(im, ax=axes[1], shrink=0.85)
    for ax in axes:
        ax.set_xlabel("b")
        ax.set_ylabel("a")
    fig.suptitle(title)
    fig.subplots_adjust(left=0.07, right=0.97, bottom=0.11, top=0.86, wspace=0.25)  # fixed:
    # tight_layout measured every label again, about half the time of the whole plot
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
