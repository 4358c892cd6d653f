"""`colortrain evaluate`: a checkpoint's metrics on a store split, as a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from colortrain.checkpoint import check_store_fit, load_checkpoint
from colortrain.config import ModelConfig
from colortrain.data import StoreDataset, make_loader, open_version, resolve_version
from colortrain.model import create_model
from colortrain.runtime import resolve_device
from colortrain.train import evaluate

LABELS = {
    "loss": "rebalanced cross-entropy",
    "acc1": "acc@1 (per pixel)",
    "acc5": "acc@5 (per pixel)",
    "acc1_weighted": "acc@1, rebalanced",
    "acc5_weighted": "acc@5, rebalanced",
    "psnr": "PSNR (dB, RGB)",
    "ab_rmse": "ab RMSE",
}


def evaluate_checkpoint(
    checkpoint: Path,
    store: str,
    split: str = "val",
    *,
    device: str = "auto",
    batch_size: int = 32,
    max_batches: int | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a store split; the store's features must be the checkpoint's."""
    ckpt = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    group = open_version(store)
    check_store_fit(ckpt, group, split)
    name = ckpt["features"]["name"]
    config = ModelConfig.from_dict(ckpt["model"]["config"])
    model = create_model(config)
    model.load_state_dict(ckpt["model"]["state"])
    model.to(dev)
    dataset = StoreDataset(store, split, name, with_rgb=True)
    loader, _ = make_loader(dataset, batch_size, shuffle=False)
    weights = ckpt["lab"]["weights"].to(dev, torch.float32)
    metrics = evaluate(model, loader, weights, dev, max_batches=max_batches)
    return {
        "checkpoint": str(checkpoint),
        "store": resolve_version(store),
        "split": split,
        "images": dataset.num_rows,
        "model": config.kind,
        "preset": config.preset,
        "metrics": metrics,
    }


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
            value = result["metrics"][key]
            text = f"{100 * value:.2f}%" if key.startswith("acc") else f"{value:.4f}"
            table.add_row(label, text)
    (console or Console()).print(table)
