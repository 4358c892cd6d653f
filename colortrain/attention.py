"""The attention figure of `colorize --attention`: where the caption acted on the picture.

The map is the mean over channels of the last FiLM block's output activation (h, w), bilinearly
upsampled over the colorized picture and drawn with a colour bar of its values. The figure's size
is bounded whatever the picture's size and aspect ratio: the picture is shrunk to at most
FIGURE_MAX_SIDE pixels on its long side first, and the figure's sides are clamped.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from colortrain.text import literal, wrapped_lines

FIGURE_MAX_SIDE = 1024  # pixels of the picture drawn in the figure, long side
FIGURE_INCHES = (6.0, 1.5, 12.0)  # width; least and most height
FIGURE_DPI = 100
CAPTION_WIDTH, CAPTION_LINES = 50, 4  # the caption over the figure: characters, lines
COLOURBAR_LABEL = "mean activation of the last FiLM block"


def display_size(height: int, width: int, max_side: int = FIGURE_MAX_SIDE) -> tuple[int, int]:
    """(h, w) of the picture as drawn: aspect kept, long side at most `max_side`, sides >= 1."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def upsample_heat(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of the activation map (h, w) to `size` (H, W), float32."""
    t = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None, None]  # (1, 1, h, w)
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def attention_figure(
    heat: np.ndarray, image: np.ndarray, path: str | Path, caption: str = ""
) -> None:
    """Write the activation (h, w) over the picture (H, W, 3) uint8: a PNG with a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = display_size(*image.shape[:2])
    shown = image
    if (h, w) != image.shape[:2]:
        shown = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)  # (h, w, 3)
    up = upsample_heat(heat, (h, w))  # (h, w) at the drawn size
    fig_w, least, most = FIGURE_INCHES
    fig, ax = plt.subplots(figsize=(fig_w, min(most, max(least, fig_w * h / w))))
    ax.imshow(shown, aspect="auto" if max(h, w) / min(h, w) > 20 else "equal")
    layer = ax.imshow(up, cmap="jet", alpha=0.5, extent=(0, w, h, 0), aspect=ax.get_aspect())
    fig.colorbar(layer, ax=ax, label=COLOURBAR_LABEL, fraction=0.046, pad=0.04)
    ax.set_axis_off()
    if caption:
        ax.set_title(wrapped_lines(caption, CAPTION_WIDTH, CAPTION_LINES), **literal(fontsize=9))
    fig.savefig(path, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
