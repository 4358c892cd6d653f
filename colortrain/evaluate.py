"""`colortrain evaluate`: a checkpoint's metrics on a store split, as a table, JSON or a report.

Per pixel: acc@1/acc@5 and their rebalanced forms, the rebalanced loss, ab RMSE. Per picture
(the predicted ab joined with the picture's own L, against the stored colour picture): PSNR,
SSIM and mean CIEDE2000 (scikit-image), and the colourfulness of Hasler and Suesstrunk (2003) of
the prediction and of the truth. With a report, every batch also runs once more with its captions'
colour word swapped (the report's swap accuracy).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from skimage.color import deltaE_ciede2000
from skimage.metrics import structural_similarity

from colorfeat.constants import ANNEALED_T
from colorfeat.errors import UserError
from colorfeat.lab import rgb_to_lab
from colorfeat.store.staging import check_outside_store
from colortrain.data import make_loader
from colortrain.evalrun import EvalRun, Evaluation, colorize_batch, open_run
from colortrain.hues import dominant_hue
from colortrain.metrics import LABELS, MetricAccumulator, format_metric
from colortrain.modelcard import refresh_model_card
from colortrain.report import write_report
from colortrain.swap import encode_captions, swap_colour_word, swap_colours
from colortrain.validation import forward_batch

DEFAULT_BATCH_SIZE = 32


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
    swap: bool = False,
) -> Evaluation:
    """One pass over the split: every metric, each picture's caption and dominant hue, and with
    `swap` the hue predicted from its caption with the colour word swapped."""
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
        captions = [str(run.texts[c]) for c in batch["caption"].numpy()]
        out.captions += captions
        if swap:
            _swap_test(run, batch, captions, temperature, out)
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


def _swap_test(
    run: EvalRun,
    batch: dict[str, torch.Tensor],
    captions: list[str],
    temperature: float,
    out: Evaluation,
) -> None:
    """Colorize the batch again from its captions with the colour word swapped; note the hues."""
    colours = swap_colours(run.vocab, run.lexicon)
    swapped = [swap_colour_word(c, colours) if colours else None for c in captions]
    texts = [s[0] if s else c for s, c in zip(swapped, captions, strict=True)]
    tokens, lengths = encode_captions(texts, run.vocab)  # (B, T), (B,)
    batch = {**batch, "tokens": tokens, "lengths": lengths}
    logits = forward_batch(run.model, batch, run.device)  # (B, K, h, w)
    pred = colorize_batch(logits, batch["rgb"].numpy(), temperature)  # (B, S, S, 3)
    for p, s in zip(pred, swapped, strict=True):
        out.swap_words.append(s[1] if s else None)
        out.swap_hues.append(dominant_hue(rgb_to_lab(p)[..., 1:]) if s else None)


def _evaluate(
    checkpoint: Path,
    store: str,
    split: str,
    device: str,
    batch_size: int,
    max_batches: int | None = None,
    swap: bool = False,
) -> tuple[EvalRun, Evaluation]:
    """Open the checkpoint on the split and run it; the result names the checkpoint."""
    run = open_run(checkpoint, store, split, device)
    evaluation = run_evaluation(run, batch_size=batch_size, max_batches=max_batches, swap=swap)
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
    """`colortrain evaluate`: the result, the report (with `report`), the run's model card.

    The report directory is checked before the evaluation runs; the model card is refreshed only
    in the run directory `fit` made (see colortrain.modelcard.refresh_model_card).
    """
    if report is not None:
        check_outside_store(report, "--report")
    run, evaluation = _evaluate(checkpoint, store, split, device, batch_size, swap=bool(report))
    report_path = None if report is None else write_report(run, evaluation, report)
    try:
        refresh_model_card(checkpoint, evaluation.result)
    except UserError as exc:  # the figures are still printed
        print(f"colortrain: warning: the model card is not refreshed: {exc}", file=sys.stderr)
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
