"""CIELAB colour science: RGB <-> LAB, the 625-bin ab grid, quantisation and decoding.

Pure array functions (numpy, with torch accepted where a model produces the input); no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from colorfeat.constants import (
    AB_BINS_PER_AXIS,
    AB_MAX,
    AB_MIN,
    AB_STEP,
    ANNEALED_T,
    LUMA_601,
    NUM_AB_BINS,
    SOFT_ENCODE_NEIGHBOURS,
    SOFT_ENCODE_SIGMA,
    TARGET_STRIDE,
)

if TYPE_CHECKING:  # torch is imported only where decoding needs it: image workers stay light
    import torch

DecodeMethod = Literal["expectation", "annealed", "mode"]


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 (..., 3) -> CIELAB float32 (..., 3), D65; L in [0, 100]."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB with a last axis of 3, got {rgb.dtype} {rgb.shape}")
    flat = rgb.reshape(-1, 1, 3).astype(np.float32) / 255.0  # (P, 1, 3): OpenCV wants an image
    lab = cv2.cvtColor(flat, cv2.COLOR_RGB2Lab)
    return lab.reshape(rgb.shape)


def luma(rgb: np.ndarray | torch.Tensor, divisor: float = 1.0) -> np.ndarray | torch.Tensor:
    """ITU-R BT.601 luma of RGB (..., 3) divided by `divisor`, float32 and not rounded (...).

    The one grayscale conversion: what the trunk sees (divisor 255), what colorize resizes, what
    a report shows. numpy in, numpy out; a tensor in, a tensor out (on its device).
    """
    weights = np.asarray(LUMA_601, dtype=np.float32) / np.float32(divisor)  # (3,)
    if isinstance(rgb, np.ndarray):
        return rgb.astype(np.float32) @ weights
    import torch

    return rgb.to(torch.float32) @ torch.from_numpy(weights).to(rgb.device)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB float (..., 3) -> sRGB uint8 (..., 3); out-of-gamut colours are clipped."""
    lab = np.asarray(lab, dtype=np.float32)
    if lab.shape[-1] != 3:
        raise ValueError(f"expected LAB with a last axis of 3, got {lab.shape}")
    flat = lab.reshape(-1, 1, 3)  # (P, 1, 3)
    rgb = cv2.cvtColor(flat, cv2.COLOR_Lab2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8).reshape(lab.shape)


def ab_grid() -> np.ndarray:
    """The (625, 2) float32 ab bin centres, a-major: row 25*i + j is (a_i, b_j)."""
    axis = np.arange(AB_MIN, AB_MAX + 1, AB_STEP, dtype=np.float32)
    a, b = np.meshgrid(axis, axis, indexing="ij")  # (25, 25) each
    return np.stack([a.ravel(), b.ravel()], axis=1)  # (625, 2)


def quantize_ab(ab: np.ndarray) -> np.ndarray:
    """Hard-assign ab (..., 2) to the nearest bin centre; uint16 (...) bin indices.

    Rounds to the nearest multiple of the grid step with numpy's half-to-even rule, as the
    original code did, and clips points outside the grid to the edge bin.
    """
    ab = np.asarray(ab)
    if ab.shape[-1] != 2:
        raise ValueError(f"expected ab with a last axis of 2, got {ab.shape}")
    steps = np.rint(ab.astype(np.float64) / AB_STEP)  # (..., 2), half to even
    idx = np.clip(steps - AB_MIN / AB_STEP, 0, AB_BINS_PER_AXIS - 1).astype(np.int64)
    return (idx[..., 0] * AB_BINS_PER_AXIS + idx[..., 1]).astype(np.uint16)


def soft_encode_ab(
    ab: np.ndarray, k: int = SOFT_ENCODE_NEIGHBOURS, sigma: float = SOFT_ENCODE_SIGMA
) -> np.ndarray:
    """Soft-encode ab (..., 2) over its k nearest bins with a Gaussian (Zhang et al. 2016).

    Returns float32 (..., 625) distributions.
    """
    ab = np.asarray(ab, dtype=np.float32)
    grid = ab_grid()
    flat = ab.reshape(-1, 2)  # (P, 2)
    d2 = ((flat[:, None, :] - grid[None, :, :]) ** 2).sum(-1)  # (P, 625)
    nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]  # (P, k)
    w = np.exp(-np.take_along_axis(d2, nearest, axis=1) / (2 * sigma**2))  # (P, k)
    w /= w.sum(axis=1, keepdims=True)
    out = np.zeros((flat.shape[0], NUM_AB_BINS), dtype=np.float32)  # (P, 625)
    np.put_along_axis(out, nearest, w.astype(np.float32), axis=1)
    return out.reshape(*ab.shape[:-1], NUM_AB_BINS)


def decode_ab(
    probs: np.ndarray | torch.Tensor,
    method: DecodeMethod = "annealed",
    temperature: float = ANNEALED_T,
) -> np.ndarray | torch.Tensor:
    """Decode (..., 625) bin probabilities to ab (..., 2); same array type as the input.

    `expectation` is the mean over bin centres, `annealed` the annealed mean with `temperature`
    (Zhang et al. 2016; T = 1 is the expectation), `mode` the most likely bin's centre.
    """
    import torch

    is_numpy = not isinstance(probs, torch.Tensor)
    p = torch.from_numpy(np.asarray(probs)) if is_numpy else probs
    if p.shape[-1] != NUM_AB_BINS:
        raise ValueError(f"expected a last axis of {NUM_AB_BINS}, got {tuple(p.shape)}")
    p = p.to(torch.float64 if is_numpy else torch.float32)
    grid = torch.from_numpy(ab_grid()).to(device=p.device, dtype=p.dtype)  # (625, 2)
    if method == "mode":
        ab = grid[p.argmax(dim=-1)]  # (..., 2)
    else:
        if method == "annealed":
            if temperature <= 0:
                raise ValueError(f"temperature must be positive, got {temperature}")
            p = torch.softmax(torch.log(p.clamp_min(1e-12)) / temperature, dim=-1)
        elif method != "expectation":
            raise ValueError(f"unknown decode method {method!r}")
        else:
            p = p / p.sum(dim=-1, keepdim=True)
        ab = p @ grid  # (..., 2)
    return ab.numpy().astype(np.float32) if is_numpy else ab


def downsample_ab(
    ab: np.ndarray, stride: int = TARGET_STRIDE, method: Literal["area", "strided"] = "area"
) -> np.ndarray:
    """Reduce an (H, W, 2) ab map to (H/stride, W/stride, 2).

    `area` (the default) averages each stride x stride block, so a target is the colour of the
    region the model predicts for and textures do not alias; `strided` keeps every stride-th pixel
    as the original code did.
    """
    h, w = ab.shape[:2]
    if h % stride or w % stride:
        raise ValueError(f"ab map {h}x{w} is not divisible by the stride {stride}")
    if method == "strided":
        return np.ascontiguousarray(ab[::stride, ::stride])
    if method != "area":
        raise ValueError(f"unknown downsampling method {method!r}")
    # INTER_AREA at an integer factor is the block mean, five times faster than numpy's.
    small = (w // stride, h // stride)
    return cv2.resize(ab.astype(np.float32), small, interpolation=cv2.INTER_AREA)  # (H/s, W/s, 2)


def ab_targets(rgb: np.ndarray, stride: int = TARGET_STRIDE) -> np.ndarray:
    """uint16 (S/stride, S/stride) target bins of an (S, S, 3) uint8 RGB image."""
    lab = rgb_to_lab(rgb)  # (S, S, 3)
    return quantize_ab(downsample_ab(lab[..., 1:], stride))
