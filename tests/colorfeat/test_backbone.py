"""Trunks: truncation shapes, weight sources and their hashes, the network input."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torchvision

from colorfeat.config import BackboneConfig
from colorfeat.constants import IMAGENET_MEAN, IMAGENET_STD, LUMA_601
from colorfeat.errors import UserError
from colorfeat.hashing import file_sha256
from colorfeat.trunk import weights
from colorfeat.trunk.backbone import create_trunk
from colorfeat.trunk.fuse import fuse_batchnorm
from colorfeat.trunk.preprocess import prepare_input
from colorfeat.trunk.shapes import feature_shape
from colorfeat.trunk.state import state_dict_hash

# (channels, stride) after each layer: basic-block and bottleneck ResNets.
EXPECTED = {
    "resnet18": {"layer1": (64, 4), "layer2": (128, 8), "layer3": (256, 16), "layer4": (512, 32)},
    "resnet101": {
        "layer1": (256, 4),
        "layer2": (512, 8),
        "layer3": (1024, 16),
        "layer4": (2048, 32),
    },
}


LAYERS = ("layer1", "layer2", "layer3", "layer4")


@pytest.mark.parametrize("arch", sorted(EXPECTED))
@pytest.mark.parametrize("layer", LAYERS)
def test_truncation_shapes(arch: str, layer: str) -> None:
    cfg = BackboneConfig(backbone=arch, layer=layer, weights="none", image_size=64)
    trunk = create_trunk(cfg)
    channels, stride = EXPECTED[arch][layer]
    big = BackboneConfig(backbone=arch, layer=layer, weights="none", image_size=224)
    assert feature_shape(big) == (channels, 224 // stride, 224 // stride)
    assert list(trunk._modules)[-1] == layer
    assert not trunk.training
    assert not any(p.requires_grad for p in trunk.parameters())
    with torch.inference_mode():
        out = trunk(torch.randn(2, 3, 64, 64))  # (2, C, 64/stride, 64/stride)
    assert out.shape == (2, channels, 64 // stride, 64 // stride)
    assert feature_shape(cfg) == tuple(out.shape[1:])
    assert torch.isfinite(out).all()


def test_paper_default_is_resnet101_layer2_imagenet_v1() -> None:
    cfg = BackboneConfig()
    assert (cfg.backbone, cfg.layer, cfg.weights) == ("resnet101", "layer2", "imagenet")
    assert (
        weights.imagenet_weights("resnet101") is torchvision.models.ResNet101_Weights.IMAGENET1K_V1
    )


_HASH_SCRIPT = """
from colorfeat.trunk.backbone import create_trunk
from colorfeat.config import BackboneConfig
cfg = BackboneConfig(backbone="resnet18", layer="layer3", weights="none", seed=7)
print(create_trunk(cfg).weights_hash)
"""


def test_random_weights_are_identical_across_processes() -> None:
    cfg = BackboneConfig(backbone="resnet18", layer="layer3", weights="none", seed=7)
    here = create_trunk(cfg)
    other = subprocess.run(
        [sys.executable, "-c", _HASH_SCRIPT], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == here.weights_hash
    assert here.weights_id == "none:seed=7"
    torch.manual_seed(123)  # the global RNG does not leak into the init
    again = create_trunk(
        BackboneConfig(backbone="resnet18", layer="layer3", weights="none", seed=7)
    )
    assert again.weights_hash == here.weights_hash
    seed8 = create_trunk(
        BackboneConfig(backbone="resnet18", layer="layer3", weights="none", seed=8)
    )
    assert seed8.weights_hash != here.weights_hash


def test_weights_file_full_model_or_trunk_only(tmp_path) -> None:
    torch.manual_seed(3)
    model = torchvision.models.resnet18()
    full = tmp_path / "full.pt"
    torch.save(model.state_dict(), full)
    trunk = create_trunk(BackboneConfig(backbone="resnet18", layer="layer2", weights=str(full)))
    expected = {
        k: v for k, v in model.state_dict().items() if not k.startswith(("layer3", "layer4", "fc"))
    }
    assert trunk.weights_hash == state_dict_hash(expected)
    assert trunk.weights_id == "file:full.pt"

    only = tmp_path / "trunk.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trunk.state_dict().items()}}, only)
    again = create_trunk(BackboneConfig(backbone="resnet18", layer="layer2", weights=str(only)))
    assert again.weights_hash == trunk.weights_hash


def test_weights_file_that_does_not_fit_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "r50.pt"
    torch.save(torchvision.models.resnet50().state_dict(), bad)
    with pytest.raises(UserError, match="does not fit this trunk: .*wrong shape"):
        create_trunk(BackboneConfig(backbone="resnet18", layer="layer1", weights=str(bad)))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable state-dict file"):
        create_trunk(BackboneConfig(backbone="resnet18", weights=str(junk)))
    with pytest.raises(UserError, match="no such file"):
        create_trunk(BackboneConfig(backbone="resnet18", weights=str(tmp_path / "missing.pt")))


def test_imagenet_without_cache_or_network_says_how_to_provide_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weights, "probe_url", lambda url: weights.Probe(False, problem="offline"))
    with pytest.raises(UserError) as err:
        create_trunk(BackboneConfig(backbone="resnet18", weights="imagenet"))
    msg = str(err.value)
    assert "\n" not in msg
    assert "TORCH_HOME" in msg and "--weights FILE" in msg and "resnet18-f37072fd.pth" in msg


class _Official:
    """A stand-in for a torchvision weights entry whose published name carries `sha[:8]`."""

    def __init__(self, sha: str) -> None:
        self.url = f"https://download.pytorch.org/models/resnet18-{sha[:8]}.pth"
        self.meta = {"_file_size": 44.7}

    def __str__(self) -> str:
        return "ResNet18_Weights.IMAGENET1K_V1"


def _official_name(monkeypatch, path) -> None:
    """Make `path`'s own hash the published one, as if it were torchvision's file."""
    entry = _Official(file_sha256(path))
    monkeypatch.setattr(weights, "imagenet_weights", lambda arch: entry)
    path.rename(path.with_name(entry.url.rsplit("/", 1)[1]))


def test_imagenet_weights_come_from_the_torch_home_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(weights, "probe_url", lambda url: pytest.fail("probed network"))
    cached = tmp_path / "hub" / "checkpoints" / "resnet18.pth"
    cached.parent.mkdir(parents=True)
    torch.manual_seed(5)
    torch.save(torchvision.models.resnet18().state_dict(), cached)
    saved = torch.load(cached, weights_only=True)
    _official_name(monkeypatch, cached)
    trunk = create_trunk(BackboneConfig(backbone="resnet18", layer="layer1", weights="imagenet"))
    assert trunk.weights_id == "imagenet:ResNet18_Weights.IMAGENET1K_V1"
    assert trunk.weights_hash == state_dict_hash({k: saved[k] for k in trunk.state_dict()})


class _Payload:
    """A pickle that creates a marker file when it is unpickled."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path, marker) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"conv1.weight": _Payload(marker)}, path)  # a real torch zip with a bad pickle


def test_a_planted_pickle_under_the_official_name_never_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weights, "probe_url", lambda url: pytest.fail("probed network"))
    marker = tmp_path / "payload-ran"
    official = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    _plant(official, marker)
    with pytest.raises(UserError) as err:
        create_trunk(BackboneConfig(backbone="resnet18", layer="layer1", weights="imagenet"))
    msg = str(err.value)
    assert "\n" not in msg and "not the published file" in msg and "f37072fd" in msg
    assert f"delete {official}" in msg and "--weights FILE" in msg
    assert not marker.exists()


def test_a_pickle_even_with_a_matching_hash_is_not_unpickled(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "payload-ran"
    planted = tmp_path / "torch" / "hub" / "checkpoints" / "planted.pth"
    _plant(planted, marker)
    _official_name(monkeypatch, planted)
    with pytest.raises(UserError) as err:
        create_trunk(BackboneConfig(backbone="resnet18", layer="layer1", weights="imagenet"))
    msg = str(err.value)
    assert "\n" not in msg and "is not a readable state-dict file" in msg and "delete" in msg
    assert not marker.exists()
    payload_file = tmp_path / "payload.pt"  # the same through --weights FILE
    _plant(payload_file, marker)
    with pytest.raises(UserError, match="not a readable state-dict file"):
        create_trunk(BackboneConfig(backbone="resnet18", weights=str(payload_file)))
    assert not marker.exists()


def test_network_probe_fails_fast_on_a_closed_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        start = time.monotonic()
        assert not weights.probe_url(f"http://127.0.0.1:{port}/x", timeout=1.0).reached
    assert time.monotonic() - start < 2.0


def test_folding_batchnorm_keeps_the_function() -> None:
    trunk = create_trunk(BackboneConfig(backbone="resnet50", layer="layer2", weights="none"))
    gen = torch.Generator().manual_seed(0)
    for m in trunk.modules():  # non-trivial statistics, so that folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
    fused = fuse_batchnorm(trunk)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trunk.modules())  # a copy
    x = torch.randn(2, 3, 64, 64, generator=gen)
    with torch.inference_mode():
        ref, out = trunk(x), fused(x)
    assert torch.linalg.norm(out - ref) / torch.linalg.norm(ref) < 1e-5


def test_prepare_input_is_bt601_gray_replicated_and_normalised() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x = prepare_input(torch.from_numpy(rgb))
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    gray = rgb.astype(np.float64) @ np.array(LUMA_601) / 255.0  # (2, 8, 8)
    for c in range(3):
        want = (gray - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(x[:, c].numpy(), want, atol=1e-5)
