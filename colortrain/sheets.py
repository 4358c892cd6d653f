"""Pictures a person looks at: the per-epoch sample sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from colortrain.text import literal, wrapped_lines

CAPTION_WIDTH, CAPTION_LINES = 28, 6  # characters per line, lines per caption on a sheet


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sample_sheet(
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]], path: str | Path, title: str = ""
) -> np.ndarray:
    """Write a PNG with one row per sample: grayscale | prediction | ground truth, and its caption.

    Each row is (gray (S, S) uint8, prediction (S, S, 3) uint8, truth (S, S, 3) uint8, caption);
    the caption is drawn as written, in at most CAPTION_LINES lines.
    Returns the sheet as an (H, W, 3) uint8 array (for TensorBoard).
    """
    plt = pyplot()
    n = max(1, len(rows))
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.7 * n), squeeze=False)
    for r, (gray, pred, truth, caption) in enumerate(rows):
        for c, (img, label) in enumerate(
            ((gray, "grayscale"), (pred, "prediction"), (truth, "ground truth"))
        ):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label, **literal(fontsize=10))
        text = wrapped_lines(caption, CAPTION_WIDTH, CAPTION_LINES)
        axes[r, 0].set_ylabel(text, **literal(fontsize=8))
    if title:
        fig.suptitle(title, **literal(fontsize=11))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    fig.canvas.draw()
    sheet = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3)
    plt.close(fig)
    return sheet
