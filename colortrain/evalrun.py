"""A checkpoint opened on one split of a store for evaluation, and what an evaluation yields.

Shared by `colortrain evaluate` (colortrain.evaluate) and its HTML report (colortrain.report),
which both read it and import nothing of each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colorfeat.device import resolve_device
from colorfeat.lab import rgb_to_lab
from colorfeat.store import open_store, schema
from colortrain.checkpoint import check_store_fit, load_checkpoint, load_model
from colortrain.data import StoreDataset
from colortrain.metrics import predicted_ab, reconstruct_rgb
from colortrain.model import Colorizer


@dataclass
class EvalRun:
    """A checkpoint's colorizer made ready to evaluate on one split of a store."""

    checkpoint: dict[str, Any]
    model: Colorizer
    dataset: StoreDataset
    texts: np.ndarray  # (M,) caption texts of the split
    weights: torch.Tensor  # (K,) rebalancing weights
    device: torch.device
    lexicon: list[str]  # the colour words the store was built with

    @property
    def vocab(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.checkpoint["vocab"])}


@dataclass
class Evaluation:
    """The result dict (what `--json` prints), and per picture its caption and predicted hue;
    with the swap test, per picture the colour its caption was swapped to (None: no colour word)
    and the hue predicted from the swapped caption."""

    result: dict[str, Any]
    captions: list[str] = field(default_factory=list)
    hues: list[str] = field(default_factory=list)
    swap_words: list[str | None] = field(default_factory=list)
    swap_hues: list[str | None] = field(default_factory=list)


def open_run(checkpoint: Path, store: str, split: str = "val", device: str = "auto") -> EvalRun:
    """Load a checkpoint and check that the store's split fits it (features, trunk, shapes)."""
    ckpt = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    version = open_store(store)
    check_store_fit(ckpt, version, split)
    model = load_model(ckpt, dev)
    dataset = StoreDataset(version, split, ckpt["features"]["name"], with_rgb=True)
    texts = version.array(split, schema.CAPTION_TEXT)[:]
    weights = ckpt["lab"]["weights"].to(dev, torch.float32)
    return EvalRun(ckpt, model, dataset, texts, weights, dev, version.lexicon)


def colorize_batch(logits: torch.Tensor, rgb: np.ndarray, temperature: float) -> np.ndarray:
    """Predicted uint8 RGB (B, S, S, 3): the annealed-mean ab joined with the truth's own L."""
    lab = rgb_to_lab(rgb)  # (B, S, S, 3)
    ab = predicted_ab(logits, size=rgb.shape[1:3], temperature=temperature)  # (B, 2, S, S)
    return reconstruct_rgb(lab[..., 0], ab.permute(0, 2, 3, 1).cpu().numpy())
