"""Pre- and post-processing around the colorizer: one set of functions for colorize, export, the
app and the report.

    gray_input     picture (H, W, 3) uint8 -> luma (S, S) float32 at the store's size
    trunk_input    luma (B, S, S) -> the trunk's input (B, 3, S, S), as the extractor made it
    annealed_ab    logits (B, K, h, w) -> annealed-mean ab (B, 2, h, w) (colorfeat.lab.decode_ab)
    rejoin         picture (H, W, 3) + ab (2, h, w) -> colour (H, W, 3) at full resolution
    gray_picture   picture (..., 3) uint8 -> its luma (...) as uint8, to show

The full-resolution join runs in bands of rows, so a picture costs a few bytes a pixel (its own
RGB, the result's, and one band of floats) whatever its size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from colorfeat.constants import ANNEALED_T
from colorfeat.lab import decode_ab, lab_to_rgb, luma, rgb_to_lab
from colorfeat.stages.images import squash_resize
from colorfeat.trunk.backbone import prepare_input

BAND_PIXELS = 1 << 18  # pixels per band of the full-resolution steps (a few MB of floats)


def _band_rows(width: int) -> int:
    return max(1, BAND_PIXELS // max(width, 1))


def gray_picture(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> its BT.601 luma rounded to uint8 (...), for showing."""
    return np.clip(np.rint(luma(rgb)), 0, 255).astype(np.uint8)


def gray_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> luma (S, S) float32 at the store's size S, not rounded.

    Exactly the store's preprocessing: the images stage's squash-resize (INTER_AREA on the uint8
    RGB), then the luma the extractor computes. No full-resolution copy is made.
    """
    small = rgb if rgb.shape[:2] == (size, size) else squash_resize(rgb, size)  # (S, S, 3)
    return luma(small)  # (S, S)


def trunk_input(
    gray: np.ndarray | torch.Tensor, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Luma (B, S, S) -> the trunk's input (B, 3, S, S): luma repeated, as the extractor sees it."""
    x = torch.as_tensor(gray).to(device)
    return prepare_input(x[..., None].expand(*x.shape, 3))  # (B, S, S, 3) in, (B, 3, S, S) out


def annealed_ab(logits: torch.Tensor, temperature: float = ANNEALED_T) -> torch.Tensor:
    """Annealed-mean ab (B, 2, h, w) of logits (B, K, h, w) over the ab bin centres."""
    probs = torch.softmax(logits.float(), dim=1).permute(0, 2, 3, 1)  # (B, h, w, K)
    ab = decode_ab(probs, method="annealed", temperature=temperature)  # (B, h, w, 2)
    return ab.permute(0, 3, 1, 2)  # (B, 2, h, w)


def upsample_ab(ab: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ab (B, 2, h, w) -> (B, 2, H, W), bilinear (half-pixel centres)."""
    if tuple(ab.shape[2:]) == tuple(size):
        return ab
    return F.interpolate(ab, size=size, mode="bilinear", align_corners=False)


def _taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps (first, second, weight of the second) of n_in -> n_out samples, as
    `F.interpolate(mode="bilinear", align_corners=False)` takes them."""
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    first = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    second = np.minimum(first + 1, n_in - 1)
    return first, second, (src - first).astype(np.float32)[:, None]


def upsample_rows(ab: np.ndarray, rows: slice, size: tuple[int, int]) -> np.ndarray:
    """Rows `rows` of ab (2, h, w) bilinearly resized to `size` (H, W): (n, W, 2) float32."""
    height, width = size
    y0, y1, wy = _taps(height, ab.shape[1])
    x0, x1, wx = _taps(width, ab.shape[2])
    hwc = np.ascontiguousarray(ab.transpose(1, 2, 0), dtype=np.float32)  # (h, w, 2)
    y0, y1, wy = y0[rows], y1[rows], wy[rows][..., None]  # (n,), (n,), (n, 1, 1)
    across = hwc[y0] * (1.0 - wy) + hwc[y1] * wy  # (n, w, 2)
    return across[:, x0] * (1.0 - wx) + across[:, x1] * wx  # (n, W, 2)


def rejoin(rgb: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """The picture's own L (H, W) joined with ab (2, h, w) upsampled to (H, W): uint8 RGB (H, W, 3).

    Works in bands of rows: the result and one band of floats are all it allocates.
    """
    h, w = rgb.shape[:2]
    out = np.empty_like(rgb)  # (H, W, 3)
    step = _band_rows(w)
    for r in range(0, h, step):
        rows = slice(r, min(r + step, h))
        lab = rgb_to_lab(rgb[rows])  # (n, W, 3)
        lab[..., 1:] = upsample_rows(ab, rows, (h, w))  # (n, W, 2)
        out[rows] = lab_to_rgb(lab)
    return out
