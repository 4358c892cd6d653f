"""`colortrain evaluate --report DIR`: one self-contained HTML file, DIR/report.html.

Sections (each a `<section id=...>`), in order: the headline figures (caption-colour and swap
accuracy), the metrics table, the learning curves of the run, held-out examples (one row each:
gray | prediction | truth, and the caption in full as text), the same pictures with the caption's
colour word swapped (the swapped caption beside them), and a confusion matrix of caption colour
words against the predicted dominant hue. Pictures and figures are PNGs embedded as base64, so
the file can be mailed. Captions are untrusted: they appear only as escaped HTML text, never
drawn into a figure.
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from colorfeat.constants import ANNEALED_T
from colorfeat.errors import UserError
from colortrain.evalrun import EvalRun, Evaluation, colorize_batch
from colortrain.hues import HUE_NAMES, confusion, single_colour_word
from colortrain.metrics import LABELS, format_metric
from colortrain.prepost import gray_picture
from colortrain.sheets import pyplot
from colortrain.swap import encode_captions, swap_caption, swap_colours
from colortrain.text import html_text, literal

__all__ = ["REPORT_NAME", "SECTIONS", "headline", "swap_caption", "write_report"]
REPORT_NAME = "report.html"
SECTIONS = ("headline", "metrics", "curves", "examples", "swapped", "confusion")
EXAMPLES = 6
PICTURE_PX = 192  # the side a picture is shown at (small ones are scaled up, pixelated)
CURVES = (("loss", ("train_loss", "val_loss")), ("accuracy", ("val_acc1", "val_acc5")),
          ("PSNR (dB)", ("val_psnr",)))  # fmt: skip


def figure_png(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG data URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def picture_png(img: np.ndarray) -> str:
    """A uint8 picture (H, W) or (H, W, 3) as a base64 PNG data URI."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG")
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


def confusion_figure(words: list[str], counts: np.ndarray) -> Any:
    """Caption colour word (rows) against predicted dominant hue (columns), with counts."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1 + 0.55 * len(HUE_NAMES), 1 + 0.45 * max(1, len(words))))
    ax.imshow(counts if len(words) else np.zeros((1, len(HUE_NAMES))), cmap="Blues")
    ax.set_xticks(range(len(HUE_NAMES)), HUE_NAMES, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(words)), words, **literal(fontsize=8))  # words of the store
    for (i, j), v in np.ndenumerate(counts):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted dominant hue")
    ax.set_ylabel("caption colour word")
    fig.tight_layout()
    return fig


def headline(evaluation: Evaluation, lexicon: frozenset[str]) -> dict[str, Any]:
    """Caption-colour accuracy (the predicted dominant hue is the one hue the caption names) and
    swap accuracy (with that word swapped, the hue is the new word), with their counts."""
    named = [single_colour_word(c, lexicon) for c in evaluation.captions]
    hits = [h == w for w, h in zip(named, evaluation.hues, strict=True) if w in HUE_NAMES]
    swaps = [
        hue == new
        for w, new, hue in zip(named, evaluation.swap_words, evaluation.swap_hues, strict=False)
        if w in HUE_NAMES and new is not None
    ]
    return {
        "caption_accuracy": float(np.mean(hits)) if hits else None,
        "caption_pictures": len(hits),
        "swap_accuracy": float(np.mean(swaps)) if swaps else None,
        "swap_pictures": len(swaps),
        "chance": 1.0 / len(HUE_NAMES),
    }


def headline_html(figures: dict[str, Any]) -> str:
    """The two figures in large type, each with what it counts."""

    def figure(key: str, label: str, count: int, what: str) -> str:
        value = figures[key]
        shown = "n/a" if value is None else f"{100 * value:.1f}%"
        big = f'<div class="big" data-figure="{key}" data-value="{value!r}">{shown}</div>'
        note = f'<div class="note">{count} {what}</div>'
        return f'<div class="figure">{big}<div>{label}</div>{note}</div>'

    return (
        '<div class="headline">'
        + figure("caption_accuracy", "caption-colour accuracy", figures["caption_pictures"],
                 "pictures whose caption names exactly one hue")
        + figure("swap_accuracy", "swap accuracy", figures["swap_pictures"],
                 "of them with the colour word swapped to another hue")
        + f"</div><p class='note'>A picture counts as right when its predicted dominant hue is "
        f"the colour its caption names; chance is about {100 * figures['chance']:.0f}%.</p>"
    )  # fmt: skip


def example_rows(run: EvalRun, count: int, temperature: float) -> dict[str, Any]:
    """Gray, prediction, truth and a colour-swapped prediction for `count` held-out pictures."""
    n = run.dataset.num_rows
    rows = np.unique(np.linspace(0, n - 1, min(count, n)).astype(np.int64))
    batch = run.dataset[(0, rows)]
    colours = swap_colours(run.vocab, run.lexicon)
    captions = [str(run.texts[c]) for c in batch["caption"].numpy()]
    swapped = [(swap_caption(c, colours) if colours else None) or c for c in captions]
    tokens, lengths = encode_captions(swapped, run.vocab)  # (B, T), (B,)
    feats = batch["features"].to(run.device).float()  # (B, C, h, w)
    true = batch["rgb"].numpy()  # (B, S, S, 3)
    with torch.no_grad():
        logits = run.model(feats, batch["tokens"].to(run.device), batch["lengths"])
        logits_swap = run.model(feats, tokens.to(run.device), lengths)
    pred = colorize_batch(logits, true, temperature)
    pred_swap = colorize_batch(logits_swap, true, temperature)
    return {"gray": gray_picture(true), "pred": pred, "true": true,
            "captions": captions, "swapped": swapped, "pred_swap": pred_swap}  # fmt: skip


def picture_rows(columns: list[str], pictures: list[list[np.ndarray]], texts: list[str]) -> str:
    """An HTML table: one row per example, its pictures, then its text (already HTML)."""
    head = "".join(f"<th>{html_text(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="pic"><img alt="{html_text(c)}" src="{picture_png(p)}"></td>'
            for c, p in zip(columns, row, strict=True)
        )  # fmt: skip
        + f'<td class="caption">{text}</td></tr>'
        for row, text in zip(pictures, texts, strict=True)
    )
    return f'<table class="examples"><tr>{head}<th>caption</th></tr>{body}</table>'


def metrics_table(metrics: dict[str, float]) -> str:
    """The metrics as an HTML table; each value cell carries the exact number in data-value."""
    rows = []
    for key, label in LABELS.items():
        if key in metrics:
            v = metrics[key]
            rows.append(f'<tr><td>{html_text(label)}</td><td class="num" data-key="{key}" '
                        f'data-value="{v!r}">{format_metric(key, v)}</td></tr>')  # fmt: skip
    return "<table><tr><th>metric</th><th>value</th></tr>" + "".join(rows) + "</table>"


def _sections(run: EvalRun, evaluation: Evaluation, temperature: float) -> dict[str, tuple]:
    """Each section's heading and HTML, in SECTIONS order."""
    history = [r for r in run.checkpoint.get("train", {}).get("metrics", []) if "epoch" in r]
    ex = example_rows(run, EXAMPLES, temperature)
    lexicon = frozenset(run.lexicon)
    words, counts = confusion(evaluation.captions, evaluation.hues, lexicon)
    examples = picture_rows(
        ["gray", "prediction", "truth"],
        [list(r) for r in zip(ex["gray"], ex["pred"], ex["true"], strict=True)],
        [f'<span class="full">{html_text(c)}</span>' for c in ex["captions"]],
    )
    swapped = picture_rows(
        ["gray", "from the caption", "colour word swapped"],
        [list(r) for r in zip(ex["gray"], ex["pred"], ex["pred_swap"], strict=True)],
        [f'<div class="label">caption</div><span class="full">{html_text(a)}</span>'
         f'<div class="label">swapped</div><span class="full swapped">{html_text(b)}</span>'
         for a, b in zip(ex["captions"], ex["swapped"], strict=True)],
    )  # fmt: skip
    curves = (_img(curves_figure(history), "learning curves") if history
              else "<p>The checkpoint holds no training history.</p>")  # fmt: skip
    confusion_html = (_img(confusion_figure(words, counts), "confusion matrix")
                      + f"<p>{int(counts.sum())} pictures whose caption names exactly one "
                      "colour.</p>")  # fmt: skip
    return {
        "headline": ("Headline", headline_html(headline(evaluation, lexicon))),
        "metrics": ("Metrics", metrics_table(evaluation.result["metrics"])),
        "curves": ("Learning curves", curves),
        "examples": ("Held-out examples", examples),
        "swapped": ("The same pictures, colour word swapped", swapped),
        "confusion": ("Caption colour word against predicted dominant hue", confusion_html),
    }


def write_report(
    run: EvalRun, evaluation: Evaluation, out_dir: Path, temperature: float = ANNEALED_T
) -> Path:
    """Write out_dir/report.html; returns its path."""
    result = evaluation.result
    body = "".join(
        f'<section id="{k}"><h2>{html_text(h)}</h2>{content}</section>'
        for k, (h, content) in _sections(run, evaluation, temperature).items()
    )
    title = f"{result['model']}/{result['preset']} on {result['split']} ({result['images']} images)"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html_text(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html_text(title)}</h1>"
        f"<p class='note'>checkpoint {html_text(result['checkpoint'])}<br>"
        f"store {html_text(result['store'])}<br>annealed-mean temperature {temperature}</p>"
        f"{body}</body></html>"
    )
    return _write_page(out_dir / REPORT_NAME, page)


def _write_page(path: Path, page: str) -> Path:
    """Write through a new file of a random name, then rename (a link at `path` is replaced)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def _img(fig: Any, alt: str) -> str:
    return f'<img alt="{alt}" src="{figure_png(fig)}">'


_CSS = (
    "body{font-family:sans-serif;max-width:1800px;margin:1.5em auto;padding:0 2em;color:#222}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}"
    "table.examples{width:100%}table.examples td.pic{padding:4px}"
    f"td.pic img{{width:{PICTURE_PX}px;height:{PICTURE_PX}px;max-width:none;"
    "image-rendering:pixelated;display:block}"
    "td.caption{font-size:1.05em;line-height:1.4;vertical-align:middle;overflow-wrap:anywhere}"
    ".label{font-size:.8em;color:#777;margin-top:.4em}.swapped{font-weight:bold}"
    ".headline{display:flex;gap:3em;flex-wrap:wrap}.figure{min-width:14em}"
    ".big{font-size:2.6em;font-weight:bold}.note{color:#666;font-size:.9em}"
)
