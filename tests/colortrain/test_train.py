"""Training: run artifacts, the checkpoint contract, exact resume, non-finite losses, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import zarr
from torch import nn

from colorfeat.errors import UserError
from colortrain.checkpoint import load_checkpoint, save_checkpoint
from colortrain.config import TrainConfig
from colortrain.train import Diverged, TrainState, fit, train_one_epoch


def _config(store: Path, out: Path, **kw) -> TrainConfig:
    base = {
        "store": str(store),
        "out": str(out),
        "preset": "small",
        "epochs": 2,
        "batch_size": 8,
        "progress": False,
        "sample_images": 3,
        "checkpoint_every": 2,
    }
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    fit(_config(tiny_store, out))
    return out


def test_fit_writes_checkpoint_metrics_sheets_and_tensorboard(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert [m["step"] for m in metrics] == [3, 6]  # 24 rows / batch 8
    for m in metrics:
        for key in ("train_loss", "val_loss", "val_acc1", "val_acc5", "val_psnr", "val_ab_rmse"):
            assert m[key] == m[key] and m[key] >= 0  # finite, not NaN
        assert 0 <= m["val_acc1"] <= m["val_acc5"] <= 1
        assert m["samples_per_s"] > 0
    sheets = sorted((trained / "samples").glob("*.png"))
    assert [p.name for p in sheets] == ["epoch-001.png", "epoch-002.png"]
    assert sheets[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((trained / "tb").glob("events.out.tfevents.*"))
    assert not list(trained.glob(".checkpoint.pt.*"))  # no temporary files left behind


def test_checkpoint_is_self_contained_and_weights_only(trained: Path, tiny_version: Path) -> None:
    path = trained / "checkpoint.pt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["format"] == "colortrain/1"
    assert ckpt["model"]["config"]["kind"] == "film"
    assert ckpt["model"]["config"]["feature_channels"] == 128
    assert ckpt["vocab"][:2] == ["<pad>", "<unk>"] and "red" in ckpt["vocab"]
    assert ckpt["features"]["name"] == "resnet18.layer2"
    assert ckpt["features"]["attrs"]["weights_hash"] == ckpt["trunk"]["hash"]
    assert ckpt["trunk"]["config"]["backbone"] == "resnet18"
    assert any(k.startswith("layer2.") for k in ckpt["trunk"]["state"])
    assert ckpt["lab"]["grid"].shape == (625, 2) and ckpt["lab"]["weights"].shape == (625,)
    assert ckpt["train"]["config"]["preset"] == "small"
    assert ckpt["train"]["epoch"] == 2 and ckpt["train"]["step"] == 6
    assert ckpt["store"]["path"] == str(tiny_version)


def test_fit_refuses_to_overwrite_without_resume(trained: Path, tiny_store: Path) -> None:
    with pytest.raises(UserError, match="--resume"):
        fit(_config(tiny_store, trained))


def test_resume_without_a_checkpoint_starts_afresh_opening_the_store_once(
    tiny_store: Path, tiny_version: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    open_group = zarr.open_group

    def counting_open(store, *args, **kwargs):
        opened.append(str(store))
        return open_group(store, *args, **kwargs)

    monkeypatch.setattr(zarr, "open_group", counting_open)
    result = fit(_config(tiny_store, tmp_path, epochs=1, resume=True, tensorboard=False))
    assert result["step"] == 3 and Path(result["checkpoint"]).exists()
    # model shapes, weights, embeddings, train and val data, checkpoint entries, model card
    assert opened == [str(tiny_version)]


def test_resume_with_other_options_is_refused(trained: Path, tiny_store: Path) -> None:
    with pytest.raises(UserError, match="batch_size"):
        fit(_config(tiny_store, trained, batch_size=4, resume=True))


def test_interrupted_and_resumed_run_is_bit_identical(tiny_store: Path, tmp_path: Path) -> None:
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    fit(_config(tiny_store, straight, epochs=3, tensorboard=False))
    fit(_config(tiny_store, broken, epochs=3, max_steps=4, tensorboard=False))  # stops mid-epoch 2
    stopped = load_checkpoint(broken / "checkpoint.pt")["train"]
    assert (stopped["epoch"], stopped["batch_in_epoch"], stopped["step"]) == (1, 1, 4)
    fit(_config(tiny_store, broken, epochs=3, resume=True, tensorboard=False))
    a = load_checkpoint(straight / "checkpoint.pt")
    b = load_checkpoint(broken / "checkpoint.pt")
    assert b["train"]["step"] == a["train"]["step"] == 9
    for key, value in a["model"]["state"].items():
        assert torch.equal(value, b["model"]["state"][key]), key
    for pid, st in a["train"]["optimizer"]["state"].items():
        for key, value in st.items():
            assert torch.equal(value, b["train"]["optimizer"]["state"][pid][key])
    assert torch.equal(a["train"]["rng"]["torch"], b["train"]["rng"]["torch"])


def test_save_checkpoint_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"a": torch.ones(2)})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"a": torch.zeros(2)})
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


class _Flaky(nn.Module):
    """Returns NaN logits on the calls listed in `bad`."""

    def __init__(self, bad: set[int]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(625))
        self.bad, self.calls = bad, 0

    def forward(self, feats, tokens, lengths):
        self.calls += 1
        logits = self.w[None, :, None, None].expand(feats.shape[0], -1, 2, 2)
        return logits * float("nan") if self.calls in self.bad else logits


def _batches(n: int) -> list[dict[str, torch.Tensor]]:
    return [
        {
            "features": torch.zeros(2, 1, 1, 1, dtype=torch.float16),
            "targets": torch.full((2, 2, 2), 312, dtype=torch.int64),
            "tokens": torch.ones(2, 3, dtype=torch.int64),
            "lengths": torch.full((2,), 3),
        }
        for _ in range(n)
    ]


class _Loader(list):
    batch_sampler = None

    @property
    def sampler(self):
        return self


def _run(model: nn.Module, n: int, config: TrainConfig) -> TrainState:
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    state = TrainState()
    train_one_epoch(
        model, _Loader(_batches(n)), opt, sched, torch.ones(625), torch.device("cpu"), state, config
    )
    return state


def test_non_finite_loss_skips_the_step_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = TrainConfig(store="s", out=str(tmp_path), max_bad_steps=3)
    model = _Flaky(bad={2, 3})
    state = _run(model, 5, config)
    assert state.step == 3 and state.batch_in_epoch == 5 and state.bad_steps == 0
    assert torch.isfinite(model.w).all()
    err = capsys.readouterr().err
    assert err.count("non-finite loss") == 2 and "step skipped" in err


def test_too_many_non_finite_losses_abort(tmp_path: Path) -> None:
    config = TrainConfig(store="s", out=str(tmp_path), max_bad_steps=3)
    model = _Flaky(bad={1, 2, 3, 4})
    with pytest.raises(Diverged, match="3 non-finite losses in a row"):
        _run(model, 6, config)
    assert torch.equal(model.w.detach(), torch.zeros(625))


def test_torchrun_ddp_on_two_cpu_processes(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    script = Path(sys.executable).parent / "colortrain"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), "fit", "--store", str(tiny_store), "--out", str(out), "--preset", "small",
        "--epochs", "2", "--batch-size", "4", "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # 24 rows / (batch 4 x 2 processes) = 3 steps per epoch on each process.
    assert [m["step"] for m in metrics] == [3, 6]
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert not any(k.startswith("module.") for k in ckpt["model"]["state"])
    assert proc.stdout.strip().splitlines()[-1] == str(out / "checkpoint.pt")
