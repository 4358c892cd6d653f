"""The rebalanced loss and the metrics: per-pixel acc@k (plain and rebalanced), PSNR, ab RMSE."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from colorfeat.constants import ANNEALED_T
from colorfeat.lab import decode_ab, lab_to_rgb, rgb_to_lab

LABELS = {  # metric key -> how tables and reports name it
    "loss": "rebalanced cross-entropy",
    "acc1": "acc@1 (per pixel)",
    "acc5": "acc@5 (per pixel)",
    "acc1_weighted": "acc@1, rebalanced",
    "acc5_weighted": "acc@5, rebalanced",
    "psnr": "PSNR (dB, RGB)",
    "ab_rmse": "ab RMSE",
    "ssim": "SSIM (RGB)",
    "ciede2000": "mean CIEDE2000",
    "colorfulness_pred": "colourfulness, prediction",
    "colorfulness_true": "colourfulness, truth",
}


def format_metric(key: str, value: float) -> str:
    """Accuracies as percentages, everything else with four decimals."""
    return f"{100 * value:.2f}%" if key.startswith("acc") else f"{value:.4f}"


def rebalanced_loss(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """Mean over pixels of w[target] * CE: logits (B, K, H, W), targets (B, H, W)."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")  # (B, H, W)
    return (class_weights[targets] * ce).mean()


def predicted_ab(
    logits: torch.Tensor, size: tuple[int, int] | None = None, temperature: float = ANNEALED_T
) -> torch.Tensor:
    """Annealed-mean ab (B, 2, H, W) from logits (B, K, h, w), bilinearly resized to `size`."""
    probs = torch.softmax(logits.float(), dim=1).permute(0, 2, 3, 1)  # (B, h, w, K)
    ab = decode_ab(probs, method="annealed", temperature=temperature)  # (B, h, w, 2)
    ab = ab.permute(0, 3, 1, 2)  # (B, 2, h, w)
    if size is not None and tuple(ab.shape[2:]) != tuple(size):
        ab = F.interpolate(ab, size=size, mode="bilinear", align_corners=False)
    return ab


def reconstruct_rgb(l_channel: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., H, W, 3) from L (..., H, W) and ab (..., H, W, 2)."""
    lab = np.concatenate([l_channel[..., None], ab], axis=-1).astype(np.float32)  # (..., H, W, 3)
    return lab_to_rgb(lab)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


class MetricAccumulator:
    """Sums the per-pixel statistics of many batches; `result()` gives the averages."""

    def __init__(self, class_weights: torch.Tensor, temperature: float = ANNEALED_T) -> None:
        self.w = class_weights
        self.temperature = temperature
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def _add(self, key: str, value: float, count: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.counts[key] = self.counts.get(key, 0.0) + count

    @torch.no_grad()
    def update(
        self, logits: torch.Tensor, targets: torch.Tensor, rgb: torch.Tensor | None = None
    ) -> None:
        """logits (B, K, h, w), targets (B, h, w); rgb (B, S, S, 3) uint8 adds PSNR and ab RMSE."""
        logits = logits.float()
        pixels = targets.numel()
        w = self.w[targets]  # (B, h, w)
        ce = F.cross_entropy(logits, targets, reduction="none")  # (B, h, w)
        self._add("loss", float((w * ce).sum()), pixels)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5, h, w)
        hit1 = (top5[:, 0] == targets).float()
        hit5 = (top5 == targets[:, None]).any(dim=1).float()
        self._add("acc1", float(hit1.sum()), pixels)
        self._add("acc5", float(hit5.sum()), pixels)
        wsum = float(w.sum())
        self._add("acc1_weighted", float((w * hit1).sum()), wsum)
        self._add("acc5_weighted", float((w * hit5).sum()), wsum)
        if rgb is None:
            return
        rgb_np = rgb.cpu().numpy()
        lab = rgb_to_lab(rgb_np)  # (B, S, S, 3)
        ab = predicted_ab(logits, size=rgb_np.shape[1:3], temperature=self.temperature)
        ab = ab.permute(0, 2, 3, 1).cpu().numpy()  # (B, S, S, 2)
        err = ((ab - lab[..., 1:]) ** 2).sum(-1)  # (B, S, S)
        self._add("ab_rmse", float(err.sum()), err.size)
        out = reconstruct_rgb(lab[..., 0], ab)  # (B, S, S, 3)
        for pred, true in zip(out, rgb_np, strict=True):
            self._add("psnr", min(psnr(pred, true), 100.0), 1)

    def result(self) -> dict[str, float]:
        out = {k: self.sums[k] / max(self.counts[k], 1e-12) for k in self.sums}
        if "ab_rmse" in out:
            out["ab_rmse"] = math.sqrt(out["ab_rmse"])
        return out
