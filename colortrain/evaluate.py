"""`colortrain evaluate`: a checkpoint's metrics on a store split, as a table, JSON or a report.

Per pixel: acc@1/acc@5 and their rebalanced forms, the rebalanced loss, ab RMSE. Per picture
(the predicted ab joined with the picture's own L, against the stored colour picture): PSNR,
SSIM and mean CIEDE2000 (scikit-image), and the colourfulness of Hasler and Suesstrunk (2003) of
the prediction and of the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from skimage.color import deltaE_ciede2000
from skimage.metrics import structural_similarity

from colorfeat.constants import ANNEALED_T
from colorfeat.device import resolve_device
from colorfeat.errors import UserError
from colorfeat.lab import rgb_to_lab
from colorfeat.store import open_store, schema
from colortrain.checkpoint import check_store_fit, load_checkpoint
from colortrain.config import ModelConfig
from colortrain.data import StoreDataset, make_loader
from colortrain.hues import dominant_hue
from colortrain.metrics import MetricAccumulator, predicted_ab, reconstruct_rgb
from colortrain.model import Colorizer, create_model
from colortrain.train import forward_batch

DEFAULT_BATCH_SIZE = 32
LABELS = {
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


@dataclass
class Evaluation:
    """The result dict (what `--json` prints), and per picture its caption and predicted hue."""

    result: dict[str, Any]
    captions: list[str] = field(default_factory=list)
    hues: list[str] = field(default_factory=list)


def open_run(checkpoint: Path, store: str, split: str = "val", device: str = "auto") -> EvalRun:
    """Load a checkpoint and check that the store's split fits it (features, trunk, shapes)."""
    ckpt = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    version = open_store(store)
    check_store_fit(ckpt, version, split)
    name = ckpt["features"]["name"]
    config = ModelConfig.from_dict(ckpt["model"]["config"])
    model = create_model(config)
    model.load_state_dict(ckpt["model"]["state"])
    model.to(dev).eval()
    dataset = StoreDataset(version, split, name, with_rgb=True)
    texts = version.array(split, schema.CAPTION_TEXT)[:]
    weights = ckpt["lab"]["weights"].to(dev, torch.float32)
    return EvalRun(ckpt, model, dataset, texts, weights, dev, version.lexicon)


def colorize_batch(logits: torch.Tensor, rgb: np.ndarray, temperature: float) -> np.ndarray:
    """Predicted uint8 RGB (B, S, S, 3): the annealed-mean ab joined with the truth's own L."""
    lab = rgb_to_lab(rgb)  # (B, S, S, 3)
    ab = predicted_ab(logits, size=rgb.shape[1:3], temperature=temperature)  # (B, 2, S, S)
    return reconstruct_rgb(lab[..., 0], ab.permute(0, 2, 3, 1).cpu().numpy())


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness M of one uint8 RGB picture (H, W, 3)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    spread = np.hypot(rg.std(), yb.std())
    return float(spread + 0.3 * np.hypot(rg.mean(), yb.mean()))


def picture_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """SSIM, mean CIEDE2000 and both colourfulness values of one predicted and true picture."""
    side = min(pred.shape[:2])
    win = min(7, side if side % 2 else side - 1)  # SSIM's window must fit the picture
    ssim = structural_similarity(pred, true, channel_axis=-1, data_range=255, win_size=win)
    delta = deltaE_ciede2000(rgb_to_lab(true), rgb_to_lab(pred), channel_axis=-1)  # (H, W)
    return {
        "ssim": float(ssim),
        "ciede2000": float(delta.mean()),
        "colorfulness_pred": colorfulness(pred),
        "colorfulness_true": colorfulness(true),
    }


@torch.no_grad()
def run_evaluation(
    run: EvalRun,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    temperature: float = ANNEALED_T,
    max_batches: int | None = None,
) -> Evaluation:
    """One pass over the split: every metric, and each picture's caption and dominant hue."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    loader, _ = make_loader(run.dataset, batch_size, shuffle=False)
    acc = MetricAccumulator(run.weights, temperature)
    sums: dict[str, float] = {}
    out = Evaluation(result={})
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        logits = forward_batch(run.model, batch, run.device)  # (B, K, h, w)
        acc.update(logits, batch["targets"].to(run.device), batch["rgb"])
        true = batch["rgb"].numpy()  # (B, S, S, 3)
        pred = colorize_batch(logits, true, temperature)
        for p, t in zip(pred, true, strict=True):
            for k, v in picture_metrics(p, t).items():
                sums[k] = sums.get(k, 0.0) + v
            out.hues.append(dominant_hue(rgb_to_lab(p)[..., 1:]))
        out.captions += [str(run.texts[c]) for c in batch["caption"].numpy()]
    metrics = acc.result()
    metrics.update({k: v / max(len(out.hues), 1) for k, v in sums.items()})
    config = run.model.config
    out.result = {
        "checkpoint": "",
        "store": run.dataset.path,
        "split": run.dataset.split,
        "images": len(out.hues),
        "model": config.kind,
        "preset": config.preset,
        "temperature": temperature,
        "metrics": metrics,
    }
    return out


def _evaluate(
    checkpoint: Path,
    store: str,
    split: str,
    device: str,
    batch_size: int,
    max_batches: int | None = None,
) -> tuple[EvalRun, Evaluation]:
    """Open the checkpoint on the split and run it; the result names the checkpoint."""
    run = open_run(checkpoint, store, split, device)
    evaluation = run_evaluation(run, batch_size=batch_size, max_batches=max_batches)
    evaluation.result["checkpoint"] = str(checkpoint)
    return run, evaluation


def evaluate_checkpoint(
    checkpoint: Path,
    store: str,
    split: str = "val",
    *,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a store split; the store's features must be the checkpoint's."""
    return _evaluate(checkpoint, store, split, device, batch_size, max_batches)[1].result


def evaluate_run(
    checkpoint: Path,
    store: str,
    split: str = "val",
    *,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    report: Path | None = None,
) -> tuple[dict[str, Any], Path | None]:
    """`colortrain evaluate`: the result, the report (with `report`), the run's model card."""
    from colortrain.modelcard import CARD_NAME, write_model_card

    run, evaluation = _evaluate(checkpoint, store, split, device, batch_size)
    report_path = None
    if report is not None:
        from colortrain.report import write_report

        report_path = write_report(run, evaluation, report)
    run_dir = checkpoint.parent
    if (run_dir / "metrics.json").is_file() or (run_dir / CARD_NAME).is_file():
        write_model_card(checkpoint, evaluation.result)
    return evaluation.result, report_path


def render_table(result: dict[str, Any], console: Console | None = None) -> None:
    """Print the metrics as a table on the terminal."""
    table = Table(
        title=f"{result['model']}/{result['preset']} on {result['split']} "
        f"({result['images']} images)"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in LABELS.items():
        if key in result["metrics"]:
            table.add_row(label, format_metric(key, result["metrics"][key]))
    (console or Console()).print(table)


def format_metric(key: str, value: float) -> str:
    """Accuracies as percentages, everything else with four decimals."""
    return f"{100 * value:.2f}%" if key.startswith("acc") else f"{value:.4f}"
