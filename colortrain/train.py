"""Training: `train_one_epoch`, `evaluate`, and `fit(config)`, which writes into RUN_DIR:

    .colortrain-run.json   marks RUN_DIR as a run directory (see colortrain.modelcard)
    README.md              the model card
    checkpoint.pt          the latest checkpoint (atomic; every epoch and every N steps)
    metrics.json           one record per epoch (train loss, val metrics, samples/s, lr)
    samples/epoch-NNN.png  grayscale | prediction | ground truth, with captions
    tb/                    TensorBoard scalars and sample sheets

Runs alone or under `torchrun` (DistributedDataParallel: gloo on CPU, NCCL on GPU). RUN_DIR may
not lie inside a feature store. The validation pass and end-of-epoch work: colortrain.validation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader

from colorfeat.errors import UserError
from colorfeat.store import StoreVersion, open_store
from colorfeat.store.staging import check_outside_store
from colortrain.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT,
    check_state_shapes,
    load_checkpoint,
    save_checkpoint,
    trunk_entry,
)
from colortrain.config import ModelConfig, TrainConfig, create_model_config
from colortrain.data import ChunkShuffleSampler, StoreDataset, make_loader, store_shapes
from colortrain.metrics import rebalanced_loss
from colortrain.model import Colorizer, create_model
from colortrain.modelcard import mark_run_dir, refresh_model_card
from colortrain.runtime import Dist, rng_state, set_rng_state, setup_distributed
from colortrain.validation import EpochReporter, console, evaluate, forward_batch, log

# Fields a resumed run must share with the run it continues.
_RESUME_FIXED = (
    "store", "features", "model", "preset", "embedding_init", "batch_size", "seed", "schedule",
)  # fmt: skip

__all__ = ["Diverged", "TrainState", "evaluate", "fit", "forward_batch", "train_one_epoch"]


class Diverged(UserError):
    """Too many non-finite losses in a row."""


@dataclass
class TrainState:
    """Where training stands; saved in the checkpoint so a resumed run continues exactly."""

    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already trained on
    step: int = 0  # optimizer steps over the whole run
    bad_steps: int = 0  # consecutive non-finite losses
    metrics: list[dict[str, Any]] = field(default_factory=list)


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    class_weights: torch.Tensor,
    device: torch.device,
    state: TrainState,
    config: TrainConfig,
    *,
    on_step: Callable[[TrainState], None] | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Train over the loader's remaining batches; stops early at config.max_steps."""
    model.train()
    bar = _EpochBar(progress, loader, state)
    losses, samples, t0 = [], 0, time.perf_counter()
    for batch in loader:
        if config.max_steps is not None and state.step >= config.max_steps:
            break
        targets = batch["targets"].to(device, non_blocking=True)
        logits = forward_batch(model, batch, device)
        loss = rebalanced_loss(logits, targets, class_weights)
        optimizer.zero_grad(set_to_none=True)
        state.batch_in_epoch += 1
        if not _finite_on_every_rank(loss):
            _skip_step(state, config)
            continue
        state.bad_steps = 0
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        state.step += 1
        losses.append(float(loss.detach()))
        samples += len(targets)
        bar.advance(losses[-1], samples / max(time.perf_counter() - t0, 1e-9))
        if on_step is not None:
            on_step(state)
    bar.close()
    elapsed = time.perf_counter() - t0
    return {
        "train_loss": float(np.mean(losses)) if losses else float("nan"),
        "samples_per_s": samples / max(elapsed, 1e-9),
        "steps": len(losses),
    }


def _finite_on_every_rank(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank: all ranks skip a step, or none (no DDP hang)."""
    finite = torch.isfinite(loss.detach()).float()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite)


def _skip_step(state: TrainState, config: TrainConfig) -> None:
    """Count a non-finite loss with a warning; Diverged after config.max_bad_steps in a row."""
    state.bad_steps += 1
    log(
        f"[yellow]warning:[/] non-finite loss at step {state.step + 1} "
        f"(epoch {state.epoch + 1}); step skipped ({state.bad_steps} in a row)"
    )
    if state.bad_steps >= config.max_bad_steps:
        raise Diverged(
            f"training diverged: {state.bad_steps} non-finite losses in a row "
            f"(epoch {state.epoch + 1}); try a lower --lr"
        )


class _EpochBar:
    """One epoch's line on a rich Progress (or nothing without one): batches, loss, samples/s."""

    def __init__(self, progress: Progress | None, loader: Any, state: TrainState) -> None:
        self.progress = progress
        if progress is not None:
            total = len(loader.batch_sampler or loader.sampler)
            self.task = progress.add_task(
                f"epoch {state.epoch + 1}", total=total, completed=state.batch_in_epoch,
                loss="-", rate="-",
            )  # fmt: skip

    def advance(self, loss: float, rate: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=f"{loss:.3f}", rate=f"{rate:.0f}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.remove_task(self.task)


def _scheduler(optimizer: torch.optim.Optimizer, kind: str, total_steps: int):
    if kind == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


def _check_resumable(old: dict[str, Any], new: TrainConfig, version: StoreVersion) -> None:
    for key in _RESUME_FIXED:
        if key == "store":  # the same version, however it was named
            same = old[key] == new.store or open_store(old[key]).path == version.path
        else:
            same = old.get(key) == getattr(new, key)
        if not same:
            raise UserError(
                f"--resume: the checkpoint was trained with {key}={old.get(key)!r}, "
                f"not {getattr(new, key)!r}; use the same options or a new --out"
            )


@dataclass
class Training:
    """What `fit` sets up once: model (and its DDP wrapper), optimizer, schedule, data, state."""

    model: Colorizer
    model_config: ModelConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    class_weights: torch.Tensor  # (K,) on the device
    loader: DataLoader
    sampler: ChunkShuffleSampler
    net: nn.Module | None = None  # the model, or its DDP wrapper
    state: TrainState = field(default_factory=TrainState)
    static: dict[str, Any] = field(default_factory=dict)  # checkpoint entries fixed for the run


def fit(config: TrainConfig) -> dict[str, Any]:
    """Train a colorizer on a store version; returns the final metrics and the checkpoint path."""
    check_outside_store(config.out, "--out")
    ddp, device = setup_distributed(config.device)
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT_NAME
    if ckpt_path.exists() and not config.resume:
        raise UserError(f"{ckpt_path} exists; pass --resume to continue it or choose another --out")
    version = open_store(config.store)  # the one time a run opens the store
    config = config.replace(features=version.feature_set(config.features))
    run = create_training(config, version, device, ddp)
    if ckpt_path.exists():
        _resume(run, ckpt_path, config, version, device)
        if ddp.main:
            log(f"resuming {ckpt_path} at epoch {run.state.epoch + 1}, step {run.state.step}")
    else:
        run.static = _static_entries(version, config.features, run.class_weights)
    run.net = run.model
    if ddp.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        run.net = nn.parallel.DistributedDataParallel(run.model, device_ids=ids)
    reporter = None
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        mark_run_dir(out)
        reporter = EpochReporter(config, version, device, out)
    last = _train_epochs(run, config, ddp, device, ckpt_path, reporter)
    if reporter is not None:
        reporter.close()
        refresh_model_card(ckpt_path, store_attrs=version.attrs)
    state = run.state
    return {"checkpoint": str(ckpt_path), "metrics": last, "step": state.step,
            "epoch": state.epoch}  # fmt: skip


def create_training(
    config: TrainConfig, version: StoreVersion, device: torch.device, ddp: Dist
) -> Training:
    """A fresh run's model (seeded), optimizer, train loader and schedule, from the store."""
    shapes = store_shapes(version, config.features)
    model_config = create_model_config(config.model, config.preset, shapes, config.embedding_init)
    class_weights = torch.from_numpy(version.lab_weights.astype(np.float32)).to(device)
    torch.manual_seed(config.seed)
    model = create_model(model_config)
    model.load_embeddings(torch.from_numpy(version.embeddings))
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    train_set = StoreDataset(version, "train", config.features, seed=config.seed,
                             in_memory=config.in_memory)  # fmt: skip
    loader, sampler = make_loader(
        train_set, config.batch_size, shuffle=True, seed=config.seed, workers=config.workers,
        rank=ddp.rank, world_size=ddp.world_size, pin_memory=device.type == "cuda",
    )  # fmt: skip
    total_steps = config.max_steps or len(sampler) * config.epochs
    scheduler = _scheduler(optimizer, config.schedule, total_steps)
    return Training(model, model_config, optimizer, scheduler, class_weights, loader, sampler)


def _resume(
    run: Training, path: Path, config: TrainConfig, version: StoreVersion, device: torch.device
) -> None:
    """Continue the run saved at `path`: weights, optimizer, schedule, RNG and where it stood."""
    ckpt = load_checkpoint(path)
    try:
        t = ckpt["train"]
        _check_resumable(t["config"], config, version)
        check_state_shapes(run.model, ckpt["model"]["state"])
        run.model.load_state_dict(ckpt["model"]["state"])
        run.optimizer.load_state_dict(t["optimizer"])
        run.scheduler.load_state_dict(t["scheduler"])
        set_rng_state(t["rng"], device)
        run.state = TrainState(t["epoch"], t["batch_in_epoch"], t["step"], 0, list(t["metrics"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"--resume: {path} cannot be continued by this run ({first})") from exc
    run.static = {k: ckpt[k] for k in ("vocab", "features", "trunk", "lab", "store")}


def _train_epochs(
    run: Training,
    config: TrainConfig,
    ddp: Dist,
    device: torch.device,
    ckpt_path: Path,
    reporter: EpochReporter | None,
) -> dict[str, Any]:
    """Epochs until config.epochs (or max_steps): checkpoint, report, metrics.json after each."""

    def checkpoint(st: TrainState) -> None:
        if ddp.main:
            save_checkpoint(ckpt_path, _checkpoint_dict(run, config, st, device))

    def on_step(st: TrainState) -> None:
        if st.step % config.checkpoint_every == 0:
            checkpoint(st)

    state, last = run.state, {}
    progress = _progress_bar() if ddp.main and config.progress else None
    with progress or nullcontext():
        while state.epoch < config.epochs:
            if config.max_steps is not None and state.step >= config.max_steps:
                break
            run.sampler.set_epoch(state.epoch, start_batch=state.batch_in_epoch)
            t0 = time.perf_counter()
            stats = train_one_epoch(
                run.net, run.loader, run.optimizer, run.scheduler, run.class_weights, device,
                state, config, on_step=on_step, progress=progress,
            )  # fmt: skip
            last = {"epoch": state.epoch + 1, "step": state.step, **stats,
                    "lr": run.optimizer.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - t0}  # fmt: skip
            finished = state.batch_in_epoch >= len(run.sampler)
            if not finished:
                last["partial"] = True
            if reporter is not None:
                reporter(run.model, last, run.class_weights)
            state.metrics.append(last)
            if finished:
                state.epoch += 1
                state.batch_in_epoch = 0
            checkpoint(state)
            if ddp.main:
                metrics = json.dumps(state.metrics, indent=2) + "\n"
                (ckpt_path.parent / "metrics.json").write_text(metrics)
            ddp.barrier()
    return last


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} samples/s"),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip


def _static_entries(
    version: StoreVersion, features: str, class_weights: torch.Tensor
) -> dict[str, Any]:
    """The checkpoint entries fixed for a whole run: vocabulary, features, trunk, LAB, store."""
    attrs = dict(version.features("train", features).attrs)
    return {
        "vocab": version.vocab_tokens,
        "features": {"name": features, "attrs": attrs},
        "trunk": trunk_entry(features, attrs),
        "lab": {
            "grid": torch.from_numpy(version.lab_grid.astype(np.float32)),
            "weights": class_weights.cpu(),
        },
        "store": {"path": version.path, "version": version.path.rstrip("/").split("/")[-1]},
    }


def _checkpoint_dict(
    run: Training, config: TrainConfig, state: TrainState, device: torch.device
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "model": {"config": run.model_config.to_dict(), "state": run.model.state_dict()},
        **run.static,
        "train": {
            "config": config.to_dict(),
            "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch,
            "step": state.step,
            "metrics": state.metrics,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "rng": rng_state(device),
        },
    }
