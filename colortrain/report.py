"""`colortrain evaluate --report DIR`: one self-contained HTML file, DIR/report.html.

Sections (each a `<section id=...>`): the metrics table, the learning curves of the run, a grid
of held-out pictures (gray | prediction | truth | caption), the same pictures with the caption's
colour word swapped, and a confusion matrix of caption colour words against the predicted
dominant hue. Figures are matplotlib (Agg) PNGs embedded as base64, so the file can be mailed.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colorfeat.constants import ANNEALED_T, LUMA_601, UNK_ID
from colorfeat.stages.captions import tokenize
from colortrain.evaluate import LABELS, EvalRun, Evaluation, colorize_batch, format_metric
from colortrain.hues import HUE_NAMES, confusion
from colortrain.sheets import pyplot

REPORT_NAME = "report.html"
SECTIONS = ("metrics", "curves", "examples", "swapped", "confusion")
EXAMPLES = 6
CURVES = (("loss", ("train_loss", "val_loss")), ("accuracy", ("val_acc1", "val_acc5")),
          ("PSNR (dB)", ("val_psnr",)))  # fmt: skip


def figure_png(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG data URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def curves_figure(history: list[dict[str, Any]]) -> Any:
    """Training and validation curves against the epoch, from the run's metrics records."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3), squeeze=False)
    for ax, (title, keys) in zip(axes[0], CURVES, strict=True):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in history if isinstance(r.get(key), float)]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.ticklabel_format(useOffset=False)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def picture_grid(rows: list[list[np.ndarray]], titles: list[str], captions: list[str]) -> Any:
    """One row per picture, one column per title; the row's caption to the left."""
    plt = pyplot()
    n, m = max(1, len(rows)), len(titles)
    fig, axes = plt.subplots(n, m, figsize=(2.4 * m + 1.5, 2.4 * n), squeeze=False)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
        axes[r, 0].set_ylabel(_wrap(captions[r]), fontsize=7)
    fig.tight_layout()
    return fig


def confusion_figure(words: list[str], counts: np.ndarray) -> Any:
    """Caption colour word (rows) against predicted dominant hue (columns), with counts."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1 + 0.55 * len(HUE_NAMES), 1 + 0.45 * max(1, len(words))))
    ax.imshow(counts if len(words) else np.zeros((1, len(HUE_NAMES))), cmap="Blues")
    ax.set_xticks(range(len(HUE_NAMES)), HUE_NAMES, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(words)), words, fontsize=8)
    for (i, j), v in np.ndenumerate(counts):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted dominant hue")
    ax.set_ylabel("caption colour word")
    fig.tight_layout()
    return fig


def swap_caption(caption: str, colours: list[str]) -> str | None:
    """The caption with its first colour word replaced by the next colour of `colours`."""
    words = tokenize(caption)
    for i, w in enumerate(words):
        if w in colours:
            words[i] = colours[(colours.index(w) + 1) % len(colours)]
            return " ".join(words)
    return None


def _wrap(text: str, width: int = 26) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:4])


def example_rows(run: EvalRun, count: int, temperature: float) -> dict[str, Any]:
    """Gray, prediction, truth and a colour-swapped prediction for `count` held-out pictures."""
    n = run.dataset.num_rows
    rows = np.unique(np.linspace(0, n - 1, min(count, n)).astype(np.int64))
    batch = run.dataset[(0, rows)]
    vocab = {w: i for i, w in enumerate(run.checkpoint["vocab"])}
    # Swap among the named hues (not to gray or white); other colour words if none is known.
    colours = [w for w in HUE_NAMES[:-1] if w in vocab]
    if len(colours) < 2:
        colours = sorted(w for w in run.lexicon if w in vocab)
    captions = [str(run.texts[c]) for c in batch["caption"].numpy()]
    swapped = [swap_caption(c, colours) or c for c in captions]
    ids = [[vocab.get(w, UNK_ID) for w in tokenize(c)] or [UNK_ID] for c in swapped]
    tokens = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.int64)  # (B, T)
    for i, seq in enumerate(ids):
        tokens[i, : len(seq)] = torch.tensor(seq)
    feats = batch["features"].to(run.device).float()  # (B, C, h, w)
    true = batch["rgb"].numpy()  # (B, S, S, 3)
    with torch.no_grad():
        logits = run.model(feats, batch["tokens"].to(run.device), batch["lengths"])
        logits_swap = run.model(feats, tokens.to(run.device), torch.tensor([len(s) for s in ids]))
    pred = colorize_batch(logits, true, temperature)
    pred_swap = colorize_batch(logits_swap, true, temperature)
    gray = true.astype(np.float32) @ np.asarray(LUMA_601, np.float32)  # (B, S, S)
    return {"gray": gray.astype(np.uint8), "pred": pred, "true": true, "captions": captions,
            "swapped": swapped, "pred_swap": pred_swap}  # fmt: skip


def metrics_table(metrics: dict[str, float]) -> str:
    """The metrics as an HTML table; each value cell carries the exact number in data-value."""
    rows = []
    for key, label in LABELS.items():
        if key in metrics:
            v = metrics[key]
            rows.append(f'<tr><td>{html.escape(label)}</td><td class="num" data-key="{key}" '
                        f'data-value="{v!r}">{format_metric(key, v)}</td></tr>')  # fmt: skip
    return "<table><tr><th>metric</th><th>value</th></tr>" + "".join(rows) + "</table>"


def write_report(
    run: EvalRun, evaluation: Evaluation, out_dir: Path, temperature: float = ANNEALED_T
) -> Path:
    """Write out_dir/report.html; returns its path."""
    result = evaluation.result
    history = [r for r in run.checkpoint.get("train", {}).get("metrics", []) if "epoch" in r]
    ex = example_rows(run, EXAMPLES, temperature)
    words, counts = confusion(evaluation.captions, evaluation.hues, frozenset(run.lexicon))
    examples = picture_grid(
        [list(r) for r in zip(ex["gray"], ex["pred"], ex["true"], strict=True)],
        ["gray", "prediction", "truth"], ex["captions"],
    )  # fmt: skip
    swapped = picture_grid(
        [list(r) for r in zip(ex["gray"], ex["pred"], ex["pred_swap"], strict=True)],
        ["gray", "caption", "colour word swapped"],
        [f"{a}  ->  {b}" for a, b in zip(ex["captions"], ex["swapped"], strict=True)],
    )  # fmt: skip
    sections = {
        "metrics": ("Metrics", metrics_table(result["metrics"])),
        "curves": ("Learning curves", _img(curves_figure(history), "learning curves")
                   if history else "<p>The checkpoint holds no training history.</p>"),
        "examples": ("Held-out examples", _img(examples, "held-out examples")),
        "swapped": ("The same pictures, colour word swapped", _img(swapped, "swapped captions")),
        "confusion": ("Caption colour word against predicted dominant hue",
                      _img(confusion_figure(words, counts), "confusion matrix")
                      + f"<p>{int(counts.sum())} pictures whose caption names exactly one "
                      "colour.</p>"),
    }  # fmt: skip
    title = f"{result['model']}/{result['preset']} on {result['split']} ({result['images']} images)"
    body = "".join(
        f'<section id="{k}"><h2>{html.escape(h)}</h2>{content}</section>'
        for k, (h, content) in sections.items()
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>checkpoint {html.escape(result['checkpoint'])}<br>store {html.escape(result['store'])}"
        f"<br>annealed-mean temperature {temperature}</p>{body}</body></html>"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_NAME
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def _img(fig: Any, alt: str) -> str:
    return f'<img alt="{alt}" src="{figure_png(fig)}">'


_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}"
)
