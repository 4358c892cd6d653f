"""Frozen ResNet trunks: any torchvision ResNet cut after layer1..layer4, with known weights.

`create_trunk(config)` returns an eval-mode `Trunk` (an `nn.Sequential` whose state-dict keys are
the full model's keys, so torchvision checkpoints load as they are) that carries where its weights
came from (`weights_id`) and a hash of the exact tensors in use (`weights_hash`).

Weights:
- "imagenet": torchvision's `<Arch>_Weights.IMAGENET1K_V1`, the original ImageNet weights the paper
  used (V1, not the later V2 recipe); taken from the torch hub cache ($TORCH_HOME/hub/checkpoints)
  or downloaded once, and used only if its SHA-256 starts with the hash in its published name.
Every weights file is read with `torch.load(weights_only=True)`: no file runs code when loaded.
- "none": a seeded random initialisation (torchvision's init under `torch.manual_seed(seed)`),
  identical in every process; it lets the whole pipeline run offline.
- a path to a state-dict file, of the full model or of the trunk only.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import socket
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from colorfeat.config import LAYERS, BackboneConfig
from colorfeat.constants import IMAGENET_MEAN, IMAGENET_STD, LUMA_601
from colorfeat.errors import UserError
from colorfeat.hashing import file_sha256

if TYPE_CHECKING:  # imported where a trunk is built: a rebuild with nothing to do skips it
    import torchvision

_STEM = ("conv1", "bn1", "relu", "maxpool")
# How long to wait for the weights server before saying "no network".
NETWORK_PROBE_TIMEOUT_S = 3.0


class Trunk(nn.Sequential):
    """A ResNet cut after one layer, plus the provenance of its weights."""

    weights_id: str = ""
    weights_hash: str = ""


def trunk_modules(layer: str) -> tuple[str, ...]:
    """The child modules of a torchvision ResNet that the trunk ending at `layer` keeps."""
    return _STEM + LAYERS[: LAYERS.index(layer) + 1]


def imagenet_weights(backbone: str) -> torchvision.models.WeightsEnum:
    """The paper's weights for `backbone`: torchvision's IMAGENET1K_V1 entry."""
    import torchvision

    return torchvision.models.get_model_weights(backbone).IMAGENET1K_V1


def create_trunk(config: BackboneConfig) -> Trunk:
    """Build the frozen, eval-mode trunk that `config` describes (on the CPU)."""
    import torchvision

    if config.weights == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = torchvision.models.get_model(config.backbone, weights=None)
        state, weights_id = None, f"none:seed={config.seed}"
    else:
        model = torchvision.models.get_model(config.backbone, weights=None)
        if config.weights == "imagenet":
            state = _imagenet_state_dict(config.backbone)
            weights_id = f"imagenet:{imagenet_weights(config.backbone)}"
        else:
            state = _load_state_file(Path(config.weights))
            weights_id = f"file:{Path(config.weights).name}"
    names = trunk_modules(config.layer)
    trunk = Trunk(OrderedDict((n, getattr(model, n)) for n in names))
    if state is not None:
        _load_into(trunk, state, source=config.weights)
    trunk.eval().requires_grad_(False)
    trunk.weights_id = weights_id
    trunk.weights_hash = state_dict_hash(trunk.state_dict())
    return trunk


def state_dict_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over (key, dtype, shape, bytes) of every tensor, in key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def feature_shape(trunk: nn.Module, image_size: int) -> tuple[int, int, int]:
    """(C, H, W) of the trunk's output for an S x S input, read off its modules (no compute).

    Stride: the stem's conv and max-pool strides times each block's stride; channels: the output
    channels of the last block's last main-path conv.
    """
    stride = _pair(trunk.conv1.stride) * _pair(trunk.maxpool.stride)
    channels = trunk.conv1.out_channels
    for name in LAYERS:
        for block in getattr(trunk, name, ()):
            stride *= block.stride
            channels = (block.conv3 if hasattr(block, "conv3") else block.conv2).out_channels
    if image_size % stride:
        raise UserError(f"--image-size {image_size} is not a multiple of the trunk stride {stride}")
    return channels, image_size // stride, image_size // stride


def _pair(value: int | tuple[int, ...]) -> int:
    return value if isinstance(value, int) else value[0]


def _imagenet_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """The official weights from the hub cache (downloaded once), checked by hash, no pickle code.

    torchvision names its files `<name>-<first hex digits of their SHA-256>.pth` and checks that
    hash only while downloading; a file already in the cache is checked here before it is read,
    and every file is read with `weights_only=True`, so a planted pickle never runs.
    """
    weights = imagenet_weights(backbone)
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = hub_dir / os.path.basename(urlparse(weights.url).path)
    prefix = _published_hash_prefix(cached.name)
    if not cached.exists():
        _download_official(weights, cached, prefix)
    advice = f"delete {cached} so that it is downloaded again, or pass --weights FILE"
    if not file_sha256(cached).startswith(prefix):
        raise UserError(
            f"the cached ImageNet weights {cached} are not the published file "
            f"(SHA-256 does not start with {prefix}): {advice}"
        )
    return _load_state_file(cached, what=f"the cached ImageNet weights {cached}", advice=advice)


def _published_hash_prefix(file_name: str) -> str:
    """The SHA-256 prefix in a published file name `<name>-<8+ hex digits>.<ext>`."""
    match = re.search(r"-([0-9a-f]{8,})\.[a-z]+$", file_name)
    if match is None:  # every torchvision ResNet URL has one; refuse rather than trust blindly
        raise UserError(f"the weights file name {file_name} carries no hash to check it by")
    return match.group(1)


def _download_official(weights: torchvision.models.WeightsEnum, dst: Path, prefix: str) -> None:
    """Download the official file into the hub cache, checked against its published hash."""
    if not network_reachable(weights.url):
        raise UserError(
            f"ImageNet weights ({weights}) are not cached at {dst} and "
            f"{urlparse(weights.url).hostname} cannot be reached: copy {dst.name} into "
            f"$TORCH_HOME/hub/checkpoints/ (TORCH_HOME now {Path(torch.hub.get_dir()).parent}), "
            "or pass --weights FILE (a state-dict file), or --weights none"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(weights.url, str(dst), hash_prefix=prefix, progress=False)
    except Exception as exc:  # URLError, a bad download hash (RuntimeError), a full disk
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(
            f"could not download ImageNet weights ({weights}): {first}; "
            "set TORCH_HOME to a directory holding them or pass --weights FILE"
        ) from exc


def network_reachable(url: str, timeout: float = NETWORK_PROBE_TIMEOUT_S) -> bool:
    """True if a TCP connection to the URL's host opens within `timeout` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _load_state_file(
    path: Path, what: str = "", advice: str = "use 'imagenet' or 'none'"
) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a file, read with `weights_only=True` (runs no pickle code)."""
    what = what or f"--weights {path}"
    if not path.is_file():
        raise UserError(f"{what}: no such file ({advice})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and format errors all mean "not a state dict"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{what} is not a readable state-dict file ({first}): {advice}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{what} does not hold a state dict of tensors ({advice})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_into(trunk: Trunk, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load the trunk's keys from a full-model or trunk-only state dict; fail clearly otherwise."""
    kept = tuple(f"{n}." for n in trunk._modules)
    wanted = trunk.state_dict()
    picked = {k: v for k, v in state.items() if k.startswith(kept)}
    missing = sorted(set(wanted) - set(picked))
    bad_shape = sorted(k for k in picked if k in wanted and picked[k].shape != wanted[k].shape)
    unknown = sorted(set(picked) - set(wanted))
    if missing or bad_shape or unknown:
        detail = "; ".join(
            f"{what} {len(keys)} (e.g. {', '.join(keys[:3])})"
            for what, keys in (
                ("missing", missing),
                ("wrong shape", bad_shape),
                ("unexpected", unknown),
            )
            if keys
        )
        raise UserError(f"--weights {source} does not fit this trunk: {detail}")
    trunk.load_state_dict(picked, strict=True)


def fuse_batchnorm(trunk: Trunk) -> nn.Module:
    """An inference copy of the trunk with every eval-mode BatchNorm folded into its conv.

    Same function up to float rounding, about 1.7x faster on CPU (fewer passes over memory); the
    weights hash stays that of the unfused trunk, which is what the weights are.
    """
    fused = copy.deepcopy(trunk)
    pairs = [(fused, "conv1", "bn1")]
    for name in LAYERS:
        for block in getattr(fused, name, ()):
            convs = [n for n in ("conv1", "conv2", "conv3") if hasattr(block, n)]
            pairs += [(block, c, c.replace("conv", "bn")) for c in convs]
            if block.downsample is not None:
                pairs.append((block.downsample, "0", "1"))
    for parent, conv, bn in pairs:
        merged = fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn))
        setattr(parent, conv, merged)
        setattr(parent, bn, nn.Identity())
    return fused.eval().requires_grad_(False)


def prepare_input(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, S, S, 3) -> the trunk's float32 input (B, 3, S, S), channels_last.

    Grayscale is ITU-R BT.601 luma of the uint8 values / 255 (not rounded), replicated to three
    channels, then ImageNet-normalised per channel.
    """
    dev = rgb.device
    luma = torch.tensor(LUMA_601, dtype=torch.float32, device=dev) / 255.0
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=dev)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=dev)
    gray = rgb.to(torch.float32) @ luma  # (B, S, S)
    x = (gray[..., None] - mean) / std  # (B, S, S, 3)
    return x.permute(0, 3, 1, 2)  # (B, 3, S, S), NHWC in memory = channels_last


INPUT_DESCRIPTION = {
    "grayscale": "ITU-R BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B of the uint8 RGB image / 255 "
    "(float, not rounded), replicated to 3 channels",
    "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
}


def describe_weights(trunk: Trunk) -> dict[str, str]:
    """The weights' provenance as store attrs."""
    return {"weights": trunk.weights_id, "weights_hash": trunk.weights_hash}


__all__ = [
    "Trunk",
    "create_trunk",
    "describe_weights",
    "feature_shape",
    "fuse_batchnorm",
    "imagenet_weights",
    "network_reachable",
    "prepare_input",
    "state_dict_hash",
    "trunk_modules",
]
