"""LAB colour core: conversions, the grid, quantisation, soft encoding, decoding."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.color
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from colorfeat.constants import AB_MAX, AB_MIN, AB_STEP, NUM_AB_BINS
from colorfeat.lab import (
    ab_grid,
    ab_targets,
    decode_ab,
    downsample_ab,
    lab_to_rgb,
    quantize_ab,
    rgb_to_lab,
    soft_encode_ab,
)

# Largest difference between the OpenCV fast path and scikit-image, measured over every
# 8-bit sRGB colour (max |dL|, |da|, |db| = 0.19, 0.47, 0.33): well under a bin (10 units).
LAB_TOLERANCE = 0.5

ab_values = st.floats(min_value=-140, max_value=140, allow_nan=False, width=32)


def all_srgb_colours(step: int = 1) -> np.ndarray:
    axis = np.arange(0, 256, step)
    rgb = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)  # (n, n, n, 3)
    return rgb.reshape(-1, 3).astype(np.uint8)  # (n^3, 3)


def test_rgb_to_lab_matches_scikit_image_on_the_whole_gamut():
    rgb = all_srgb_colours(step=3)
    fast = rgb_to_lab(rgb)
    reference = skimage.color.rgb2lab(rgb.reshape(-1, 1, 3)).reshape(-1, 3)
    assert fast.dtype == np.float32
    assert np.abs(fast - reference).max() < LAB_TOLERANCE


def test_lab_round_trip_is_within_one_level():
    rgb = all_srgb_colours(step=5)
    back = lab_to_rgb(rgb_to_lab(rgb))
    assert back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 1


def test_lab_to_rgb_clips_out_of_gamut_colours():
    lab = np.array([[50.0, 120.0, -120.0], [100.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    rgb = lab_to_rgb(lab)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 3)
    np.testing.assert_array_equal(rgb[1], [255, 255, 255])
    np.testing.assert_array_equal(rgb[2], [0, 0, 0])


def test_rgb_to_lab_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        rgb_to_lab(np.zeros((2, 3), np.float32))


def test_grid_equals_the_original(reference_dir):
    original = np.load(reference_dir / "full_lab_grid_10.npy")
    grid = ab_grid()
    assert grid.shape == (NUM_AB_BINS, 2) and grid.dtype == np.float32
    np.testing.assert_array_equal(grid, original.astype(np.float32))


def test_shipped_grid_file_equals_the_code(repo_root):
    shipped = np.load(repo_root / "priors" / "lab_grid_625.npy")
    assert shipped.dtype == np.float32
    np.testing.assert_array_equal(shipped, ab_grid())


def original_quantize(ab: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The original per-label lookup: round to a multiple of 10, find the row, 0 if absent."""
    rounded = np.round(ab, -1)
    out = np.zeros(len(ab), dtype=np.int64)
    for i, point in enumerate(rounded):
        hit = np.where((grid == point).all(axis=1))[0]
        out[i] = hit[0] if len(hit) else 0
    return out


def test_quantize_agrees_with_the_original_on_every_in_grid_point(reference_dir):
    grid = np.load(reference_dir / "full_lab_grid_10.npy")
    rng = np.random.default_rng(0)
    ab = rng.uniform(AB_MIN - 4.9, AB_MAX + 4.9, size=(4000, 2))
    ties = np.array([[5.0, -15.0], [-25.0, 35.0], [115.0, -115.0], [0.0, 0.0]])  # half-way points
    ab = np.concatenate([ab, ties])
    np.testing.assert_array_equal(quantize_ab(ab), original_quantize(ab, grid))


def test_quantize_clips_outside_the_grid():
    bins = quantize_ab(np.array([[-500.0, 500.0], [130.0, -126.0]]))
    np.testing.assert_array_equal(ab_grid()[bins], [[-120, 120], [120, -120]])


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 16), st.just(2)), elements=ab_values))
def test_quantize_returns_the_nearest_centre(ab):
    bins = quantize_ab(ab)
    assert bins.dtype == np.uint16 and bins.shape == ab.shape[:-1]
    grid = ab_grid().astype(np.float64)
    clipped = np.clip(ab.astype(np.float64), AB_MIN, AB_MAX)
    chosen = np.abs(grid[bins] - clipped)  # (P, 2)
    best = np.abs(grid[None, :, :] - clipped[:, None, :]).max(axis=2).min(axis=1)  # (P,)
    # Per axis, the chosen centre is within half a step; no centre is closer in max-norm.
    assert (chosen <= AB_STEP / 2 + 1e-9).all()
    np.testing.assert_allclose(chosen.max(axis=1), best, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, NUM_AB_BINS - 1), min_size=1, max_size=64))
def test_quantize_is_idempotent_on_centres(indices):
    idx = np.array(indices)
    np.testing.assert_array_equal(quantize_ab(ab_grid()[idx]), idx)


@settings(max_examples=100, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 8), st.integers(1, 8), st.just(3))))
def test_conversion_shapes_and_dtypes(rgb):
    lab = rgb_to_lab(rgb)
    assert lab.shape == rgb.shape and lab.dtype == np.float32
    assert (lab[..., 0] >= -1e-3).all() and (lab[..., 0] <= 100 + 1e-3).all()
    assert np.abs(lab_to_rgb(lab).astype(int) - rgb.astype(int)).max() <= 1


def test_soft_encoding_is_a_distribution_over_the_nearest_bins():
    ab = np.array([[3.0, -7.0], [0.0, 0.0], [-120.0, 120.0]], np.float32)
    q = soft_encode_ab(ab)
    assert q.shape == (3, NUM_AB_BINS) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-6)
    assert ((q > 0).sum(axis=1) == 5).all()
    np.testing.assert_array_equal(q.argmax(axis=1), quantize_ab(ab))


def one_hot(indices: np.ndarray) -> np.ndarray:
    return np.eye(NUM_AB_BINS)[indices]


@pytest.mark.parametrize("method", ["expectation", "annealed", "mode"])
def test_decoding_a_one_hot_gives_its_centre(method):
    idx = np.array([0, 312, 624, 100])
    np.testing.assert_allclose(decode_ab(one_hot(idx), method=method), ab_grid()[idx], atol=1e-4)


def test_annealed_mean_sharpens_toward_the_mode():
    p = np.zeros(NUM_AB_BINS)
    p[[312, 337]] = [0.7, 0.3]  # (0, 0) and (10, 0)
    mean = decode_ab(p, method="expectation")
    annealed = decode_ab(p, method="annealed", temperature=0.38)
    assert mean[0] == pytest.approx(3.0, abs=1e-5)
    assert 0.0 < annealed[0] < mean[0]
    np.testing.assert_allclose(decode_ab(p, method="annealed", temperature=1.0), mean, atol=1e-5)


def test_decode_accepts_torch_and_keeps_the_type():
    logits = torch.randn(2, 4, 4, NUM_AB_BINS)
    ab = decode_ab(torch.softmax(logits, dim=-1))
    assert isinstance(ab, torch.Tensor) and ab.shape == (2, 4, 4, 2)
    np.testing.assert_allclose(
        ab.numpy(), decode_ab(torch.softmax(logits, -1).numpy()), rtol=1e-4, atol=1e-3
    )


def test_downsample_area_and_strided():
    ab = np.arange(8 * 8 * 2, dtype=np.float32).reshape(8, 8, 2)
    area = downsample_ab(ab, 4)
    assert area.shape == (2, 2, 2)
    np.testing.assert_allclose(area[0, 0], ab[:4, :4].reshape(-1, 2).mean(axis=0))
    np.testing.assert_array_equal(downsample_ab(ab, 4, "strided"), ab[::4, ::4])
    with pytest.raises(ValueError, match="divisible"):
        downsample_ab(ab[:6], 4)


def test_targets_of_a_flat_colour_image():
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 200
    bins = ab_targets(red)
    assert bins.shape == (4, 4) and bins.dtype == np.uint16
    expected = quantize_ab(rgb_to_lab(red[:1, :1])[0, 0, 1:])
    assert (bins == expected).all()
