"""What `fit` does at the end of each epoch on the main process: the validation pass, the sample
sheet, TensorBoard scalars and the epoch's line on stderr; and the forward pass it shares with
training and `colortrain evaluate`.

Log lines are never wrapped, whatever the width of the terminal or its absence (a log file
keeps one line per epoch).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from colorfeat.lab import rgb_to_lab
from colorfeat.store import StoreVersion, schema
from colortrain.config import TrainConfig
from colortrain.data import StoreDataset, make_loader
from colortrain.metrics import MetricAccumulator, predicted_ab, reconstruct_rgb
from colortrain.prepost import gray_picture
from colortrain.runtime import autocast
from colortrain.sheets import sample_sheet

console = Console(stderr=True)


def log(text: str) -> None:
    """One line on stderr (rich markup allowed), never wrapped."""
    console.print(text, soft_wrap=True)


def forward_batch(
    model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device
) -> torch.Tensor:
    """Logits (B, K, H, W) for a loader batch; float16 features become float32 on the device."""
    feats = batch["features"].to(device, non_blocking=True).float()  # (B, C, h, w)
    tokens = batch["tokens"].to(device, non_blocking=True)
    with autocast(device):
        return model(feats, tokens, batch["lengths"])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    class_weights: torch.Tensor,
    device: torch.device,
    *,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Loss, acc@1/acc@5 (plain and rebalanced), and with rgb in the batches PSNR and ab RMSE."""
    model.eval()
    acc = MetricAccumulator(class_weights)
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        targets = batch["targets"].to(device)
        logits = forward_batch(model, batch, device)
        acc.update(logits, targets, batch.get("rgb"))
    return acc.result()


def sample_rows(
    model: nn.Module,
    dataset: StoreDataset,
    rows: np.ndarray,
    device: torch.device,
    texts: np.ndarray,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]:
    """(gray, prediction, truth, caption) for some rows of a split, for the sample sheet."""
    batch = dataset[(0, rows)]
    model.eval()
    with torch.no_grad():
        logits = forward_batch(model, batch, device)
    rgb = batch["rgb"].numpy()  # (B, S, S, 3)
    lab = rgb_to_lab(rgb)
    ab = predicted_ab(logits, size=rgb.shape[1:3]).permute(0, 2, 3, 1).cpu().numpy()
    pred = reconstruct_rgb(lab[..., 0], ab)  # (B, S, S, 3)
    gray = gray_picture(rgb)  # (B, S, S)
    captions = [str(texts[c]) for c in batch["caption"].numpy()]
    return list(zip(gray, pred, rgb, captions, strict=True))


class EpochReporter:
    """End-of-epoch work on the main process: validation, sample sheet, TensorBoard, console."""

    def __init__(
        self, config: TrainConfig, version: StoreVersion, device: torch.device, out: Path
    ) -> None:
        self.config, self.device, self.out = config, device, out
        split = "val" if "val" in version.splits else "train"  # a store without val: use train
        self.dataset = StoreDataset(version, split, config.features, seed=config.seed,
                                    in_memory=config.in_memory, with_rgb=True)  # fmt: skip
        self.loader, _ = make_loader(self.dataset, config.batch_size, shuffle=False)
        self.texts = version.array(split, schema.CAPTION_TEXT)[:]
        n = self.dataset.num_rows
        rows = np.linspace(0, n - 1, min(config.sample_images, n)).astype(np.int64)
        self.rows = np.unique(rows)
        self.writer = None
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"))

    def __call__(
        self, model: nn.Module, record: dict[str, Any], class_weights: torch.Tensor
    ) -> None:
        val = evaluate(model, self.loader, class_weights, self.device,
                       max_batches=self.config.val_batches)  # fmt: skip
        record.update({f"val_{k}": v for k, v in val.items()})
        if len(self.rows):
            sheet = sample_sheet(
                sample_rows(model, self.dataset, self.rows, self.device, self.texts),
                self.out / "samples" / f"epoch-{record['epoch']:03d}.png",
                title=f"{self.config.model}/{self.config.preset}, epoch {record['epoch']}, "
                f"step {record['step']}",
            )  # fmt: skip
            if self.writer is not None:
                self.writer.add_image("samples", sheet, record["step"], dataformats="HWC")
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, float) and math.isfinite(v):
                    self.writer.add_scalar(k, v, record["step"])
            self.writer.flush()
        log(summary_line(record))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def summary_line(record: dict[str, Any]) -> str:
    """One epoch's line: epoch, step and the main figures."""
    keys = ("train_loss", "val_loss", "val_acc1", "val_acc5", "val_psnr", "samples_per_s")
    parts = [f"{k} {record[k]:.4g}" for k in keys if k in record]
    return f"epoch {record['epoch']} step {record['step']}: " + ", ".join(parts)
