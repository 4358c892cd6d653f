"""The trunk's input: stored uint8 RGB to normalised grayscale, and how that is described."""

from __future__ import annotations

import torch

from colorfeat.constants import IMAGENET_MEAN, IMAGENET_STD
from colorfeat.lab import luma


def prepare_input(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, S, S, 3) -> the trunk's float32 input (B, 3, S, S), channels_last.

    Grayscale is ITU-R BT.601 luma of the uint8 values / 255 (not rounded), replicated to three
    channels, then ImageNet-normalised per channel.
    """
    dev = rgb.device
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=dev)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=dev)
    gray = luma(rgb, 255.0)  # (B, S, S)
    x = (gray[..., None] - mean) / std  # (B, S, S, 3)
    return x.permute(0, 3, 1, 2)  # (B, 3, S, S), NHWC in memory = channels_last


INPUT_DESCRIPTION = {
    "grayscale": "ITU-R BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B of the uint8 RGB image / 255 "
    "(float, not rounded), replicated to 3 channels",
    "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
}
